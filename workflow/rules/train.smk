# Training: one body (workflow/scripts/train.py over diffusion_lib/jobs/train.py) for every piece of a
# run (diffusion_lib/plan/study_plan.py): the full budget (`train`), a smaller rung's decay branch
# (`branch`) and a piece of the constant-lr trunk (`trunk`) differ only in their files and runtime.
# Resumable: each job continues from its resume.ckpt if one exists.
if not PACKS:

    rule train:
        """Train one run (mining config × seed) to the full budget: with the ladder, the decay branch
        from its trunk's last state; otherwise from scratch."""
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
            **train_resources(lambda wc: PLAN.model_job(wc.run)),
        params:
            **TRAIN_PARAMS,
            train=lambda wc: PLAN.run(wc.run).train,
            mining=lambda wc: PLAN.run(wc.run).mining_config,
        script:
            "../scripts/train.py"


if LADDER and not PACKS:

    # one rung of the budget ladder below the full budget: the decay branch from the trunk state at its
    # branch point to its budget (a model like a run's)
    use rule train as branch with:
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
        resources:
            **train_resources(lambda wc: PLAN.model_job(wc.run, wc.steps)),

    # the constant-lr trunk of one run to one branch point, continued from the previous saved trunk
    # state (diffusion_lib/settings/ladder.py)
    use rule train as trunk with:
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
        resources:
            **train_resources(lambda wc: PLAN.trunk_job(wc.run, wc.step)),


# train.pack > 1: one rule per pack and piece (diffusion_lib/plan/packs.py): with the ladder, each
# trunk piece and each smaller rung of the pack's runs, and the full budget (the rule named after the
# pack). A loop, since a pack's outputs are its runs' own files, a set no wildcard pattern names; params
# equal the single-run rules' (the script reads its runs from its files), so changing the pack size or
# adding seeds never retrains a finished run or piece.
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
            files.PACK_BENCHMARK.format(rule=job.rule)
        priority: resources.PRIORITY[job.pack.mode]
        conda:
            "../../envs/ired.yaml"
        threads: CFG["threads"]
        resources:
            **train_resources(lambda wc, job=job: job.members[0], len(job.members)),
        params:
            **TRAIN_PARAMS,
            train=job.pack.runs[0].train,
            mining=job.pack.mining,
        script:
            "../scripts/train.py"
