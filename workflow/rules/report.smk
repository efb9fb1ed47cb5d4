localrules:
    heldout,
    reference,
    jobs_table,
    aggregate,
    plot_main,
    plot_ablation,
    plot_stability,
    report_md,
    figures,
    all,


rule jobs_table:
    """Every training job of the study, its run, the state it starts from and its files (training_jobs.tsv)."""
    output:
        STUDY.jobs,
    log:
        STUDY.log("jobs_table"),
    conda:
        "../../envs/ired.yaml"
    params:
        rows=PLAN.table(),
    script:
        "../scripts/jobs_table.py"


rule aggregate:
    """Tidy tables (runs, endpoints, contrasts, convergence, compute, diagnostics, ...) and the method §8 verdict."""
    input:
        unpack(lambda wc: PLAN.study_inputs(looks_taken())),
    output:
        **TABLE_FILES,
        **PLAN.growth_files,
        verdict=STUDY.verdict,
    log:
        STUDY.log("aggregate"),
    conda:
        "../../envs/ired.yaml"
    params:
        study=lambda wc: PLAN.study_params(PLAN.looks()),
        code=CODE["study"],
    script:
        "../scripts/aggregate.py"


rule plot_main:
    """Main seaborn figures, drawn from the cached tables only."""
    input:
        **{k: TABLE_FILES[k] for k in PLOT_TABLES},
        verdict=STUDY.verdict,
    output:
        **VECTOR_FILES,
        **LATEX_FILES,
        **{f: report(path, caption=f"../report/{f}.rst", category=files.FIGURES[f]) for f, path in FIGURE_FILES.items()},
    log:
        STUDY.log("plot_main"),
    conda:
        "../../envs/ired.yaml"
    params:
        options=CFG["report"],
        tables=PLOT_TABLES,
        figures=tuple(files.FIGURES),
        latex=PAPER_TABLES,
        code=CODE["study"],
    script:
        "../scripts/plot_main.py"


rule plot_ablation:
    """Test MSE against one swept mining parameter, baseline as a reference band."""
    input:
        **{k: TABLE_FILES[k] for k in ("runs", "ablation")},
        verdict=STUDY.verdict,
    output:
        report(
            STUDY.figure("ablation_{parameter}"),
            caption="../report/ablation.rst",
            category="5. Ablations",
            subcategory="{parameter}",
        ),
        [STUDY.figure("ablation_{parameter}", ext) for ext in VECTOR_EXTS],
    log:
        STUDY.log("plot_ablation_{parameter}"),
    conda:
        "../../envs/ired.yaml"
    params:
        options=CFG["report"],
        code=CODE["study"],
    script:
        "../scripts/plot_ablation.py"


rule plot_stability:
    """The stability study's figure: Kaplan-Meier curves at the primary learning rate, the unstable share per rate."""
    input:
        **{k: TABLE_FILES[k] for k in ("stability_km", "stability_shares", "stability_runs")},
        verdict=STUDY.verdict,
    output:
        report(STUDY.figure("stability"), caption="../report/stability.rst", category="6. Stability"),
        STABILITY_VECTORS,
    log:
        STUDY.log("plot_stability"),
    conda:
        "../../envs/ired.yaml"
    params:
        options=CFG["report"],
        code=CODE["study"],
    script:
        "../scripts/plot_stability.py"


rule report_md:
    """report.md and report.html: the verdict first, then the numbers and figures behind it."""
    input:
        **{k: TABLE_FILES[k] for k in REPORT_TABLES},
        verdict=STUDY.verdict,
        figures=[*FIGURE_FILES.values(), *ABLATION_FIGURES.values(), *STABILITY_FIGURES.values()],
    output:
        md=STUDY.report_md,
        html=report(STUDY.report_html, caption="../report/report_md.rst", category="0. Verdict"),
    log:
        STUDY.log("report_md"),
    conda:
        "../../envs/ired.yaml"
    params:
        figures=FIGURE_FILES | ABLATION_FIGURES | STABILITY_FIGURES,
        code=CODE["study"],
    script:
        "../scripts/report_md.py"


rule figures:
    """Target: draw missing or outdated figures (every format) and LaTeX tables of the study; add --forcerun
    plot_main plot_ablation to redraw all."""
    input:
        [*FIGURE_FILES.values(), *VECTOR_FILES.values(), *LATEX_FILES.values(), *ABLATION_FIGURES.values()],
        ABLATION_VECTORS,
        [*STABILITY_FIGURES.values(), *STABILITY_VECTORS],
