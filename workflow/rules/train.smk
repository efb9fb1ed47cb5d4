if LADDER and not PACKS:

    rule trunk:
        """The constant-lr trunk of one run to one branch point, continued from the previous saved trunk
        state (diffusion_lib/settings/ladder.py); resumes from trunk/resume.ckpt if one exists."""
        input:
            unpack(lambda wc: PLAN.trunk_job(wc.run, wc.step).inputs),
            val=LAYOUT.splits["val_id"],
        output:
            state=f"{TRUNK}.ckpt",
            sidecar=f"{TRUNK}.json",
        log:
            f"{TRUNK}.log",
        benchmark:
            f"{TRUNK}.benchmark.tsv"
        priority: train_priority
        conda:
            "../../envs/ired.yaml"
        threads: CFG["threads"]
        resources:
            gpu=GPU,
            runtime=runtime_of(lambda wc: PLAN.trunk_job(wc.run, wc.step)),
            mem_mb=CFG["resources"]["train_mem_mb"],
        params:
            **TRAIN_PARAMS,
            train=lambda wc: PLAN.run(wc.run).train,
            mining=lambda wc: PLAN.run(wc.run).mining_config,
        script:
            "../scripts/train.py"

    rule branch:
        """One rung of the budget ladder below the full budget: the decay branch from the trunk state at
        its branch point to its budget (a model like a run's)."""
        input:
            unpack(lambda wc: PLAN.model_job(wc.run, wc.steps).inputs),
            val=LAYOUT.splits["val_id"],
        output:
            model=f"{RUNG}/model.pt",
            curve=f"{RUNG}/curve.csv",
            status=f"{RUNG}/status.json",
        log:
            f"{RUNG}/train.log",
        benchmark:
            f"{RUNG}/train.benchmark.tsv"
        priority: train_priority
        conda:
            "../../envs/ired.yaml"
        threads: CFG["threads"]
        resources:
            gpu=GPU,
            runtime=runtime_of(lambda wc: PLAN.model_job(wc.run, wc.steps)),
            mem_mb=CFG["resources"]["train_mem_mb"],
        params:
            **TRAIN_PARAMS,
            train=lambda wc: PLAN.run(wc.run).train,
            mining=lambda wc: PLAN.run(wc.run).mining_config,
        script:
            "../scripts/train.py"


if not PACKS:

    rule train:
        """Train one run (mining config × seed) to the full budget: with the ladder, the decay branch
        from its trunk's last state; otherwise from scratch. Resumes from its resume.ckpt if one exists."""
        input:
            unpack(lambda wc: PLAN.model_job(wc.run).inputs),
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
            runtime=runtime_of(lambda wc: PLAN.model_job(wc.run)),
            mem_mb=CFG["resources"]["train_mem_mb"],
        params:
            **TRAIN_PARAMS,
            train=lambda wc: PLAN.run(wc.run).train,
            mining=lambda wc: PLAN.run(wc.run).mining_config,
        script:
            "../scripts/train.py"


# train.pack > 1: one rule per pack and piece (diffusion_lib/plan/pack_jobs.py): with the ladder, each
# trunk piece and each smaller rung of the pack's runs, and the full budget (the rule named after the
# pack). Outputs are the runs' own files and params equal the single-run rules' (the script reads its
# runs from its files), so changing the pack size or adding seeds never retrains a finished run or piece.
for job in PACK_JOBS:

    rule:
        name:
            job.rule
        input:
            val=LAYOUT.splits["val_id"],
            start=job.starts,
        output:
            **job.outputs,
        log:
            job.logs,
        benchmark:
            f"results/packs/{job.rule}.benchmark.tsv"
        priority: resources.PRIORITY[job.pack.mode]
        conda:
            "../../envs/ired.yaml"
        threads: CFG["threads"]
        resources:
            gpu=GPU,
            runtime=runtime_of(lambda wc, job=job: job.members[0], len(job.members)),
            mem_mb=resources.train_mem_mb(CFG, len(job.members)),
        params:
            **TRAIN_PARAMS,
            train=job.pack.runs[0].train,
            mining=job.pack.mining,
        script:
            "../scripts/train.py"
