rule train:
    """Train one strategy with one seed; resumes from results/resume/ if a checkpoint exists."""
    input:
        val=f"{DATA}/val_id.pt",
    output:
        model=f"{TRAIN}/model.pt",
        curve=f"{TRAIN}/curve.csv",
        status=f"{TRAIN}/status.json",
    params:
        resume=RESUME,
        mining=lambda wc: CFG["strategies"][wc.strategy],
        train=CFG["train"],
        rank=CFG["data"]["rank"],
        id_eps=CFG["data"]["id_eps"],
        device=CFG["device"],
    threads: CFG["threads"]
    priority: train_priority
    resources:
        gpu=GPU,
    log:
        "results/logs/train/{strategy}/seed{seed}.log",
    conda:
        "../../envs/ired.yaml"
    script:
        "../scripts/train.py"
