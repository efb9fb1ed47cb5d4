rule aggregate:
    """Tidy tables (runs, endpoints, contrasts, convergence, compute, diagnostics, ...) and the SPEC §8 verdict."""
    input:
        metrics=run_files("metrics"),
        curves=run_files("curve"),
        reference=f"{DATA}/reference.json",
    output:
        **TABLE_FILES,
        verdict=f"{REPORT}/tables/verdict.json",
    params:
        expected=RUNS,
        roles={k: CFG["comparison"][k] for k in ("baseline", "random", "adversarial")},
        primary=CFG["comparison"]["primary"],
        delta=CFG["comparison"]["delta"],
        alpha=CFG["comparison"]["alpha"],
        convergence=CFG["comparison"]["convergence"],
        default_inner=CFG["evaluation"]["default_inner"],
        sweep_points=CFG["sweep_points"],
        training={k: CFG["train"][k] for k in ("steps", "batch_size", "lr", "timesteps", "lr_schedule")}
        | {"seeds": {s: len(SEEDS_OF[s]) for s in STRATEGIES}, "ema_update_every": CFG["train"]["ema"]["update_every"]},
        name=CFG["name"],
    log:
        f"{REPORT}/logs/aggregate.log",
    conda:
        "../../envs/ired.yaml"
    script:
        "../scripts/aggregate.py"


rule plot_main:
    """Main seaborn figures, drawn from the cached tables only."""
    input:
        **{k: TABLE_FILES[k] for k in ("runs", "curves", "landscape", "contrasts")},
        verdict=f"{REPORT}/tables/verdict.json",
    output:
        forest=report(FIGURE_FILES["forest"], caption="../report/forest.rst", category="0. Verdict"),
        mse=report(FIGURE_FILES["mse"], caption="../report/mse.rst", category="1. Comparison"),
        curves=report(FIGURE_FILES["curves"], caption="../report/curves.rst", category="2. Training"),
        compute=report(FIGURE_FILES["compute"], caption="../report/compute.rst", category="2. Training"),
        diagnostics=report(FIGURE_FILES["diagnostics"], caption="../report/diagnostics.rst", category="2. Training"),
        landscape=report(FIGURE_FILES["landscape"], caption="../report/landscape.rst", category="3. Energy landscape"),
        test_time=report(FIGURE_FILES["test_time"], caption="../report/test_time.rst", category="4. Test-time compute"),
    params:
        options=CFG["report"],
    log:
        f"{REPORT}/logs/plot_main.log",
    conda:
        "../../envs/ired.yaml"
    script:
        "../scripts/plot_main.py"


rule plot_ablation:
    """Test MSE against one swept mining parameter, baseline as a reference band."""
    input:
        **{k: TABLE_FILES[k] for k in ("runs", "ablation")},
        verdict=f"{REPORT}/tables/verdict.json",
    output:
        report(f"{REPORT}/figures/ablation_{{parameter}}.{FIG_EXT}", caption="../report/ablation.rst",
               category="5. Ablations", subcategory="{parameter}"),
    params:
        options=CFG["report"],
    log:
        f"{REPORT}/logs/plot_ablation_{{parameter}}.log",
    conda:
        "../../envs/ired.yaml"
    script:
        "../scripts/plot_ablation.py"


rule report_md:
    """report.md and report.html: the verdict first, then the numbers and figures behind it."""
    input:
        **{k: TABLE_FILES[k] for k in REPORT_TABLES},
        verdict=f"{REPORT}/tables/verdict.json",
        figures=[*FIGURE_FILES.values(), *ABLATION_FIGURES.values()],
    output:
        md=f"{REPORT}/report.md",
        html=report(f"{REPORT}/report.html", caption="../report/report_md.rst", category="0. Verdict"),
    params:
        figures=FIGURE_FILES | ABLATION_FIGURES,
    log:
        f"{REPORT}/logs/report_md.log",
    conda:
        "../../envs/ired.yaml"
    script:
        "../scripts/report_md.py"


rule figures:
    """Target: (re)draw every figure from cached evaluation tables (`snakemake figures`)."""
    input:
        [*FIGURE_FILES.values(), *ABLATION_FIGURES.values()],
