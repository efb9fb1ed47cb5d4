rule data:
    """Held-out validation and test sets (ID and OOD), shared by every run, and trivial-predictor MSEs."""
    output:
        **{split: f"{DATA}/{split}.pt" for split in SPLITS},
        reference=f"{DATA}/reference.json",
    params:
        rank=CFG["data"]["rank"],
        seed=CFG["data"]["seed"],
        id_eps=CFG["data"]["id_eps"],
        ood_eps=CFG["data"]["ood_eps"],
        val_size=CFG["data"]["val_size"],
        test_size=CFG["data"]["test_size"],
        reference_size=CFG["data"]["reference_size"],
    log:
        "results/logs/data.log",
    conda:
        "../../envs/ired.yaml"
    script:
        "../scripts/make_data.py"
