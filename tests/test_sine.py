import math

import numpy as np
import pytest
import torch

from rnnlab.data.series import make_windows, read_series, sine_series, split_windows
from rnnlab.data.sine import SineDataModule
from rnnlab.evaluate import evaluate
from rnnlab.train import train
from tests.conftest import TINY_TRAINER, compose_config


def test_windows_and_split_match_the_sheet():
    series = sine_series(200)
    assert series[3] == pytest.approx(math.sin(3))
    x, y = make_windows(series, 50, 1)
    assert x.shape == (150, 50, 1) and y.shape == (150, 1)
    (x_train, y_train), (x_val, y_val) = split_windows(x, y, 50)
    assert x_train.shape == (100, 50, 1) and y_train.shape == (100, 1) and x_val.shape == (50, 50, 1)
    assert np.array_equal(x_train[7, :, 0], series[7:57]) and y_train[7, 0] == series[57]
    assert np.array_equal(x_val[0, :, 0], series[100:150]) and y_val[-1, 0] == series[199]


def test_configurable_waves_noise_and_horizon():
    two = sine_series(100, step=0.5, waves=[{"frequency": 2.0, "phase": 1.0}, {"frequency": 0.5, "amplitude": 3.0}])
    t = 0.5 * 9
    assert two[9] == pytest.approx(math.sin(2 * t + 1) + 3 * math.sin(0.5 * t))
    noisy = sine_series(200, noise_std=0.1, seed=1)
    assert 0.05 < np.std(noisy - sine_series(200)) < 0.15
    x, y = make_windows(sine_series(200), 50, 10)
    assert x.shape == (141, 50, 1) and y.shape == (141, 10) and y[0, 9] == pytest.approx(math.sin(59))


@pytest.mark.parametrize("kwargs, message", [
    (dict(seq_len=250), r"seq_len 250 \+ horizon 1 is longer than the series \(200 values\)"),
    (dict(horizon=101), r"50 windows leave no training windows with val_windows=50"),
])
def test_bad_windows_are_clear_errors(kwargs, message):
    dm = SineDataModule(**kwargs)
    with pytest.raises(ValueError, match=message):
        dm.setup()


def test_series_file_with_non_finite_values_is_refused(tmp_path):
    path = tmp_path / "series.txt"
    path.write_text("0.1 0.2\n0.3, nan 0.5\ninf\n")
    with pytest.raises(ValueError, match=r"series.txt: 2 non-finite value\(s\), first at index 3 \(nan\)"):
        read_series(path)
    good = tmp_path / "good.npy"
    np.save(good, np.sin(np.arange(80.0)))
    dm = SineDataModule(series_file=str(good), seq_len=10, val_windows=20)
    dm.setup()
    assert dm.x_train.shape == (50, 10, 1)


def test_series_files_that_are_not_one_real_series_are_refused_naming_the_file(tmp_path):
    cases = {
        "words.txt": ("1 2, 3 abc 5", r"words.txt: value 3 \('abc'\) is not a number"),
        "text.npy": ("garbage", r"text.npy: not a .npy file \(no NumPy header\)"),
        "objects.npy": (np.array([1, "a", None], dtype=object),
                        r"objects.npy: not a NumPy array of numbers \(it holds Python objects\)"),
        "complex.npy": (np.ones(80) + 1j, r"complex.npy: expected real numbers, got dtype complex128"),
        "grid.npy": (np.zeros((40, 2)),
                     r"grid.npy: expected one series, shaped \(n,\), \(n, 1\) or \(1, n\); got \(40, 2\)"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        if isinstance(content, str):
            path.write_text(content)
        else:
            np.save(path, content, allow_pickle=True)
        with pytest.raises(ValueError, match=message):
            read_series(path)
    for shape in [(80,), (80, 1), (1, 80)]:
        np.save(tmp_path / "ok.npy", np.arange(80.0).reshape(shape))
        assert np.array_equal(read_series(tmp_path / "ok.npy"), np.arange(80.0))
    np.save(tmp_path / "ints.npy", np.arange(5))
    assert read_series(tmp_path / "ints.npy").dtype == np.float64


def test_lightning_sine_beats_the_last_value_baseline(tmp_path):
    full_data = [f"trainer.limit_{s}_batches=null" for s in ("train", "val", "test")]
    cfg = compose_config(["task=sine", *TINY_TRAINER, *full_data, "trainer.max_epochs=8", "model.net.hidden_sizes=[32]",
                          "logger=tensorboard"], tmp_path)
    metrics = train(cfg)
    # measured: val/mse 0.00136 against the last-value baseline's 0.462
    assert metrics["val/mse"] < 0.01 * metrics["val/baseline_mse"] and metrics["val/mse"] < 0.005
    assert (tmp_path / "run" / "sine_predictions.png").stat().st_size > 10_000


def test_free_running_forecast_shape(tmp_path):
    from rnnlab.models.sine import SeriesRegressor
    from rnnlab.tasks.sine import SineRegressor

    torch.manual_seed(0)
    model = SineRegressor(SeriesRegressor(hidden_sizes=[8], cell="naive_gru")).eval()
    window = torch.sin(torch.arange(50.0))[:, None]
    forecast = model.forecast(window, 3)
    expected, w = [], window
    with torch.no_grad():
        for _ in range(3):  # each prediction is appended to the window the next one reads
            nxt = model(w[None])[0, 0]
            expected.append(nxt)
            w = torch.cat([w[1:], nxt.reshape(1, 1)])
    torch.testing.assert_close(forecast, torch.stack(expected))


def test_horizon_and_noise_from_the_command_line_train(tmp_path):
    cfg = compose_config(["task=sine", *TINY_TRAINER, "model.net.cell=gru", "data.noise_std=0.1", "data.horizon=10",
                          "model.net.hidden_sizes=[16]", "model.plot=false"], tmp_path)
    metrics = train(cfg)
    assert math.isfinite(metrics["val/mse"]) and metrics["val/baseline_mse"] > 0
    ckpt = tmp_path / "run" / "checkpoints" / "best.ckpt"

    def evaluated(*overrides: str) -> float:
        eval_cfg = compose_config([f"ckpt_path={ckpt}", "trainer.enable_progress_bar=false", *overrides], tmp_path,
                                  config_name="eval")
        return evaluate(eval_cfg)["test/mse"]

    assert evaluated("trainer.limit_test_batches=2") == pytest.approx(metrics["test/mse"], rel=1e-6)
    assert evaluated("batch_size=3") == pytest.approx(evaluated(), rel=1e-5)  # every window, other batches
    with pytest.raises(ValueError, match=r"^eval_bptt: the data of .*best.ckpt \(rnnlab.data.sine.SineDataModule\) "
                                         r"has no evaluation windows"):
        evaluated("eval_bptt=5")
