if not PACKS:

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
            **TRAIN_PARAMS,
            mining=lambda wc: run_spec(wc).mining_config,
        script:
            "../scripts/train.py"


# train.pack > 1: one rule per pack (scheduling.plan_packs), whose outputs are its runs' files.
# Its params equal the single-run rule's (the seeds are in the output paths), so changing the pack
# size or adding seeds never retrains a finished run.
for pack in PACKS:

    rule:
        name:
            pack.rule
        input:
            val=LAYOUT.splits["val_id"],
        output:
            model=[f"{r.dir}/model.pt" for r in pack.runs],
            curve=[f"{r.dir}/curve.csv" for r in pack.runs],
            status=[f"{r.dir}/status.json" for r in pack.runs],
        log:
            [f"{r.dir}/train.log" for r in pack.runs],
        benchmark:
            f"results/packs/{pack.rule}.benchmark.tsv"
        priority: scheduling.PRIORITY[pack.mode]
        conda:
            "../../envs/ired.yaml"
        threads: CFG["threads"]
        resources:
            gpu=GPU,
            runtime=pack_runtime(pack),
            mem_mb=scheduling.train_mem_mb(CFG, len(pack.runs)),
        params:
            **TRAIN_PARAMS,
            mining=pack.mining,
        script:
            "../scripts/train.py"
