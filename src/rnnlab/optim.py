"""Learning-rate schedules used by the presets, and optimizers from Hydra partials."""

import torch

from rnnlab.checks import check_count


class KeepThenDecay:
    """LambdaLR factor: 1 for the first `keep_epochs` epochs, then x`decay` each epoch.

    Epoch e (0-based) gets `decay ** max(e + 1 - keep_epochs, 0)`: Zaremba's schedule with
    `keep_epochs=4` keeps the lr for epochs 1-4 and halves it from epoch 5 on; `keep_epochs=1`
    gives `lr * decay ** e`.
    """

    def __init__(self, keep_epochs: int, decay: float):
        self.keep_epochs = keep_epochs
        self.decay = decay

    def __call__(self, epoch: int) -> float:
        return self.decay ** max(epoch + 1 - self.keep_epochs, 0)


def configure_optimizers(module, optimizer=None, scheduler=None, default_lr: float = 1e-3, params=None):
    """Lightning's `configure_optimizers` from Hydra partials: `optimizer(params=...)` over `params` (parameter
    groups; a group's `lr_scale` multiplies the optimizer's lr, e.g. one lr per layer) or all of the module's,
    then `scheduler(optimizer=...)` stepped each epoch; `OneCycleLR` is stepped every batch, peaking at each
    group's lr over the run's steps. A missing or empty scheduler means a constant lr."""
    params = module.parameters() if params is None else params
    try:
        optimizer = (optimizer or (lambda params: torch.optim.SGD(params, lr=default_lr)))(params=params)
    except (TypeError, ValueError) as e:  # a value of the wrong type or range in the config
        raise ValueError(f"model.optimizer: {e}") from e
    for group in optimizer.param_groups:
        group["lr"] *= group.get("lr_scale", 1.0)
    if not scheduler:
        return optimizer
    if getattr(scheduler, "func", None) is torch.optim.lr_scheduler.OneCycleLR:
        one_cycle = scheduler(optimizer=optimizer, max_lr=[group["lr"] for group in optimizer.param_groups],
                              total_steps=int(module.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": one_cycle, "interval": "step"}}
    try:
        made = scheduler(optimizer=optimizer)
    except (TypeError, ValueError) as e:
        raise ValueError(f"model.scheduler: {e}") from e
    if isinstance(made, torch.optim.lr_scheduler.CosineAnnealingLR):  # T_max 0 divides by zero at the first step
        check_count("model.scheduler.T_max (epochs; trainer.max_epochs by default)", made.T_max)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": made, "interval": "epoch"}}
