# The 1x recipe: 12 epochs, SGD, lr 0.01 for a total batch of 16 (scaled linearly), warmup, steps at 8 and 11.
train = dict(
    epochs=12,
    batch_size=2,  # per process
    lr=0.01,
    optimizer="sgd",  # or "adamw"
    sgd_momentum=0.9,
    adamw_betas=(0.9, 0.999),
    weight_decay=1e-4,
    warmup_iters=1000,
    warmup_ratio=0.001,
    lr_steps=(8, 11),
    lr_gamma=0.1,
    clip_grad_norm=0.0,  # 0 = off
    loss_weights={},  # a factor for named terms of the loss, e.g. {"loss_box": 2.0} (the others count once)
    # evaluate and save for inference an average of the weights over about 1/(1 - ema_decay) iterations,
    # reached after a warm-up of a few ema_tau iterations (README, "Training and evaluation")
    ema=False,
    ema_decay=0.9998,
    ema_tau=2000.0,
    amp="none",  # none | bf16 | fp16
    nonfinite="stop",  # stop | skip
    seed=0,
    init_from=None,  # a checkpoint whose model weights start the run (optimizer and schedule start afresh)
    deterministic=False,
    num_workers=4,
    log_interval=50,
    checkpoint_interval=1,
    keep_checkpoints=0,  # how many epoch_N.pth to keep, the newest (0 = all)
    checkpoint_iters=0,
    tensorboard=True,  # events in <work-dir>/tensorboard: tensorboard --logdir work_dirs
)
eval = dict(interval=1, batch_size=2, num_workers=2)
