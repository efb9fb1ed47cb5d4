if LADDER and not PACKS:

    rule trunk:
        """The constant-lr trunk of one run to one branch point, continued from the previous saved trunk
        state (diffusion_lib/settings/ladder.py); resumes from trunk/resume.ckpt if one exists."""
        input:
            unpack(trunk_start),
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
            runtime=trunk_runtime,
            mem_mb=CFG["resources"]["train_mem_mb"],
        params:
            **TRAIN_PARAMS,
            train=lambda wc: run_spec(wc).train,
            mining=lambda wc: run_spec(wc).mining_config,
        script:
            "../scripts/train.py"

    rule branch:
        """One rung of the budget ladder below the full budget: the decay branch from the trunk state at
        its branch point to its budget (a model like a run's)."""
        input:
            unpack(branch_start),
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
            runtime=branch_runtime,
            mem_mb=CFG["resources"]["train_mem_mb"],
        params:
            **TRAIN_PARAMS,
            train=lambda wc: run_spec(wc).train,
            mining=lambda wc: run_spec(wc).mining_config,
        script:
            "../scripts/train.py"


if not PACKS:

    rule train:
        """Train one run (mining config × seed) to the full budget: with the ladder, the decay branch
        from its trunk's last state; otherwise from scratch. Resumes from its resume.ckpt if one exists."""
        input:
            unpack(branch_start),
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
            runtime=branch_runtime,
            mem_mb=CFG["resources"]["train_mem_mb"],
        params:
            **TRAIN_PARAMS,
            train=lambda wc: run_spec(wc).train,
            mining=lambda wc: run_spec(wc).mining_config,
        script:
            "../scripts/train.py"


# train.pack > 1: one rule per pack and piece (common.smk: pack_pieces): with the ladder, each trunk
# piece and each smaller rung of the pack's runs, and the full budget (the rule named after the pack).
# Outputs are the runs' own files and params equal the single-run rules' (the script reads its runs
# from its files), so changing the pack size or adding seeds never retrains a finished run or piece.
for pack, rule_name, kind, steps, runs in PACK_JOBS:

    rule:
        name:
            rule_name
        input:
            val=LAYOUT.splits["val_id"],
            start=[r["start"] for r in runs if r.get("start")],
        output:
            **pack_outputs(kind, runs),
        log:
            pack_logs(kind, runs),
        benchmark:
            f"results/packs/{rule_name}.benchmark.tsv"
        priority: resources.PRIORITY[pack.mode]
        conda:
            "../../envs/ired.yaml"
        threads: CFG["threads"]
        resources:
            gpu=GPU,
            runtime=pack_runtime(pack, kind, steps),
            mem_mb=resources.train_mem_mb(CFG, len(pack.runs)),
        params:
            **TRAIN_PARAMS,
            train=pack.runs[0].train,
            mining=pack.mining,
        script:
            "../scripts/train.py"
