rule evaluate:
    """method §7 metrics of one trained run on the ID and OOD test sets."""
    input:
        **{t: LAYOUT.splits[t] for t in TEST_SETS},
        model=files.MODEL_FILE,
    output:
        metrics=f"{EVAL}/metrics.json",
        per_problem=f"{EVAL}/per_problem.csv",
    log:
        f"{EVAL}/evaluate.log",
    benchmark:
        f"{EVAL}/evaluate.benchmark.tsv"
    conda:
        "../../envs/ired.yaml"
    threads: CFG["threads"]
    resources:
        gpu=GPU,
        runtime=evaluate_runtime,
        mem_mb=CFG["resources"]["evaluate_mem_mb"],
    params:
        settings=lambda wc: PLAN.eval_settings(wc.model, wc.ev),
        rank=CFG["data"]["rank"],
        code=CODE["evaluate"],
    script:
        "../scripts/evaluate.py"
