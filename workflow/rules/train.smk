rule train:
    """Train one run (mining config × seed); resumes from its resume.ckpt if one exists."""
    input:
        val=LAYOUT.splits["val_id"],
    output:
        model=f"{RUN}/model.pt",
        curve=f"{RUN}/curve.csv",
        status=f"{RUN}/status.json",
    log:
        f"{RUN}/train.log",
    benchmark:
        f"{RUN}/train.benchmark.tsv"
    priority: train_priority
    conda:
        "../../envs/ired.yaml"
    threads: CFG["threads"]
    resources:
        gpu=GPU,
        runtime=train_runtime,
        mem_mb=CFG["resources"]["train_mem_mb"],
    params:
        mining=lambda wc: run_spec(wc).mining,
        seed=lambda wc: run_spec(wc).seed,
        train=run_train_block(CFG),  # all but checkpoint_every, which the script reads from the config
        rank=CFG["data"]["rank"],
        id_eps=CFG["data"]["id_eps"],
        code=CODE["train"],
    script:
        "../scripts/train.py"
