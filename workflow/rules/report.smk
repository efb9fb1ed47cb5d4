localrules:
    heldout,
    reference,
    aggregate,
    plot_main,
    plot_ablation,
    report_md,
    figures,
    all,


rule aggregate:
    """Tidy tables (runs, endpoints, contrasts, convergence, compute, diagnostics, ...) and the method §8 verdict."""
    input:
        metrics=lambda wc: [e["metrics"] for e in run_index(study_top(looks_taken()))],
        curves=lambda wc: [e["curve"] for e in run_index(study_top(looks_taken()))],
        per_problem=lambda wc: [e["per_problem"] for e in run_index(study_top(looks_taken()))],
        rung_metrics=lambda wc: sorted({e["metrics"] for e in rung_index(study_top(looks_taken()))}),
        rung_curves=lambda wc: sorted({e["curve"] for e in rung_index(study_top(looks_taken()))}),
        looks=lambda wc: [look_path(l.top) for l in looks_taken()],
        reference=LAYOUT.reference,
    output:
        **TABLE_FILES,
        **GROWTH_FILES,
        verdict=f"{STUDY}/tables/verdict.json",
    log:
        f"{STUDY}/logs/aggregate.log",
    conda:
        "../../envs/ired.yaml"
    params:
        runs=lambda wc: run_index(study_top(looks_on_disk())),
        rungs=lambda wc: rung_index(study_top(looks_on_disk())),
        # rerun triggers leave out 'input': the key in the reference's path stands for its values
        reference_key=os.path.basename(LAYOUT.reference),
        ladder=lambda wc: {
            "rungs": LAYOUT.budgets_up_to(study_top(looks_on_disk())),
            "decay_fraction": CFG["train"]["lr_schedule"].get("decay_fraction") if LADDER else None,
            "schedule": CFG["train"]["lr_schedule"]["kind"],
            "batch_size": CFG["train"]["batch_size"],
            "paper_samples": PAPER_SAMPLES,
            "compute_matched": LAYOUT.compute_matched,
        },
        expected=[(r.strategy, r.seed) for r in RUNS],
        comparison=CFG["comparison"],
        default_inner=CFG["evaluation"]["default_inner"],
        sweep_points=CFG["sweep_points"],
        # the study's full budget: train.steps, or the largest rung until_stable added
        training=lambda wc: {k: CFG["train"][k] for k in ("batch_size", "lr", "timesteps", "lr_schedule")}
        | {
            "steps": study_top(looks_on_disk()),
            "longest_trunk": longest_trunk(study_top(looks_on_disk())),
            "stability_margin": CFG["stability_margin"],
            "rank": CFG["data"]["rank"],
            "seeds": {s: len(CFG["strategy_seeds"][s]) for s in STRATEGIES},
            "ema_update_every": CFG["train"]["ema"]["update_every"],
        },
        growth=growth_param,
        name=CFG["name"],
        code=CODE["study"],
    script:
        "../scripts/aggregate.py"


rule plot_main:
    """Main seaborn figures, drawn from the cached tables only."""
    input:
        **{k: TABLE_FILES[k] for k in PLOT_TABLES},
        verdict=f"{STUDY}/tables/verdict.json",
    output:
        **VECTOR_FILES,
        **LATEX_FILES,
        forest=report(FIGURE_FILES["forest"], caption="../report/forest.rst", category="0. Verdict"),
        ladder=report(FIGURE_FILES["ladder"], caption="../report/ladder.rst", category="0. Verdict"),
        mse=report(FIGURE_FILES["mse"], caption="../report/mse.rst", category="1. Comparison"),
        curves=report(FIGURE_FILES["curves"], caption="../report/curves.rst", category="2. Training"),
        compute=report(FIGURE_FILES["compute"], caption="../report/compute.rst", category="2. Training"),
        diagnostics=report(FIGURE_FILES["diagnostics"], caption="../report/diagnostics.rst", category="2. Training"),
        landscape=report(FIGURE_FILES["landscape"], caption="../report/landscape.rst", category="3. Energy landscape"),
        test_time=report(FIGURE_FILES["test_time"], caption="../report/test_time.rst", category="4. Test-time compute"),
    log:
        f"{STUDY}/logs/plot_main.log",
    conda:
        "../../envs/ired.yaml"
    params:
        options=CFG["report"],
        tables=PLOT_TABLES,
        figures=FIGURES,
        latex=PAPER_TABLES,
        code=CODE["study"],
    script:
        "../scripts/plot_main.py"


rule plot_ablation:
    """Test MSE against one swept mining parameter, baseline as a reference band."""
    input:
        **{k: TABLE_FILES[k] for k in ("runs", "ablation")},
        verdict=f"{STUDY}/tables/verdict.json",
    output:
        report(
            f"{STUDY}/figures/ablation_{{parameter}}.png",
            caption="../report/ablation.rst",
            category="5. Ablations",
            subcategory="{parameter}",
        ),
        [f"{STUDY}/figures/ablation_{{parameter}}.{ext}" for ext in VECTOR_EXTS],
    log:
        f"{STUDY}/logs/plot_ablation_{{parameter}}.log",
    conda:
        "../../envs/ired.yaml"
    params:
        options=CFG["report"],
        code=CODE["study"],
    script:
        "../scripts/plot_ablation.py"


rule report_md:
    """report.md and report.html: the verdict first, then the numbers and figures behind it."""
    input:
        **{k: TABLE_FILES[k] for k in REPORT_TABLES},
        verdict=f"{STUDY}/tables/verdict.json",
        figures=[*FIGURE_FILES.values(), *ABLATION_FIGURES.values()],
    output:
        md=f"{STUDY}/report.md",
        html=report(f"{STUDY}/report.html", caption="../report/report_md.rst", category="0. Verdict"),
    log:
        f"{STUDY}/logs/report_md.log",
    conda:
        "../../envs/ired.yaml"
    params:
        figures=FIGURE_FILES | ABLATION_FIGURES,
        code=CODE["study"],
    script:
        "../scripts/report_md.py"


rule figures:
    """Target: draw missing or outdated figures (every format) and LaTeX tables of the study; add --forcerun
    plot_main plot_ablation to redraw all."""
    input:
        [*FIGURE_FILES.values(), *VECTOR_FILES.values(), *LATEX_FILES.values(), *ABLATION_FIGURES.values()],
        ABLATION_VECTORS,
