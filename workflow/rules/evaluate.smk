rule evaluate:
    """SPEC §7 metrics of one trained run on the ID and OOD test sets."""
    input:
        model=f"{TRAIN}/model.pt",
        **{s: f"{DATA}/{s}.pt" for s in TEST_SETS},
    output:
        metrics=f"{EVAL}/metrics.json",
        per_problem=f"{EVAL}/per_problem.csv",
    params:
        settings=CFG["evaluation"],
        rank=CFG["data"]["rank"],
        device=CFG["device"],
    threads: CFG["threads"]
    resources:
        gpu=GPU,
    log:
        "results/logs/evaluate/{strategy}/seed{seed}.log",
    conda:
        "../../envs/ired.yaml"
    script:
        "../scripts/evaluate.py"
