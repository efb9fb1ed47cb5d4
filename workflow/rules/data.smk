rule heldout:
    """One held-out split (val_id, val_ood, test_id, test_ood), keyed by the values that shape it."""
    output:
        files.SPLIT,
    log:
        files.SPLIT_LOG,
    conda:
        "../../envs/ired.yaml"
    params:
        spec=lambda wc: PLAN.split(wc.split, wc.key),
        code=CODE["data"],
    script:
        "../scripts/make_split.py"


rule reference:
    """Trivial-predictor MSEs (zeros, per-entry mean) on the test sets: the report's floor lines."""
    input:
        **{t: LAYOUT.splits[t] for t in TEST_SETS},
    output:
        LAYOUT.reference,
    log:
        files.REFERENCE_LOG.format(key=LAYOUT.reference_key),
    conda:
        "../../envs/ired.yaml"
    params:
        spec=reference_params(CFG),
        code=CODE["data"],
    script:
        "../scripts/make_reference.py"
