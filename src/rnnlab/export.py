"""Export a checkpoint for deployment: `python export.py ckpt_path=... format=onnx output=model.onnx`.

Writes the model and its model card beside it, `model.card.md` for `model.onnx` (data, preset, metrics, intended
use, limits)."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from rnnlab import CONF_DIR
from rnnlab.checkpoint import load_run
from rnnlab.cli import check_added_keys, one_line_errors, set_threads, silence_known_warnings
from rnnlab.files import atomic_write
from rnnlab.onnx_export import export_onnx, model_card
from rnnlab.sweeps import check_own_output

log = logging.getLogger(__name__)

FORMATS = ("onnx",)


def export(cfg: DictConfig) -> Path:
    """The exported file; its model card is `<output's stem>.card.md` in the same folder, so that two exports
    into one folder keep both cards."""
    set_threads(cfg.get("threads"))
    silence_known_warnings()
    if cfg.format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {cfg.format!r}")
    check_own_output("output", cfg.output)
    run = load_run(cfg.ckpt_path)
    output = Path(cfg.output).expanduser()
    exported = export_onnx(run, output)
    card = card_path(output)
    atomic_write(card, lambda tmp: Path(tmp).write_text(model_card(run, exported, output)))
    print(f"wrote {output} ({exported['kind']}: {', '.join(exported['inputs'])} -> "
          f"{', '.join(exported['outputs'])}) and {card}")
    return output


def card_path(output: Path) -> Path:
    """`model.card.md` for `model.onnx`."""
    return output.with_name(f"{output.stem}.card.md")


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="export")
def main(cfg: DictConfig) -> None:
    with one_line_errors("export.py"):
        check_added_keys("export.py")
        export(cfg)


if __name__ == "__main__":
    main()
