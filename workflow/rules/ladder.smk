# comparison.ladder.until_stable: the ladder grows until the answer stops moving (method §8.1;
# diffusion_lib/analysis/growth.py). One checkpoint per look: the look at ladder top B reads the rungs up to B
# and either stops or adds the rung of 2B steps (its trunk piece continues from the last saved state,
# its decay branch and evaluation are ordinary trunk/branch/evaluate jobs), whose look comes next.
# The study's input functions follow the looks (diffusion_lib/plan/study_plan.py, StudyPlan.looks), so
# the whole growth happens in one snakemake invocation; nothing finished is retrained.


def looks_taken(wildcards=None):
    """Input functions: the looks in order, each asked of the checkpoint once the previous one grew."""
    return PLAN.looks(lambda top: checkpoints.look.get(budget=top).output[0])


if PLAN.growth and workflow.is_main_process:
    print(PLAN.describe_looks(), file=sys.stderr)


if PLAN.growth:

    localrules:
        look,

    checkpoint look:
        """One look of until_stable: is every verdict arm's trend per doubling flat on validation data
        over the ladder up to {budget} steps? If not, the next rung is added (within max_steps and the
        stability margin)."""
        input:
            curves=lambda wc: [e["curve"] for e in PLAN.rung_index(int(wc.budget), compute_matched=False)],
            reference=LAYOUT.reference,
        output:
            STUDY.look("{budget}"),
        log:
            STUDY.log("look-{budget}"),
        conda:
            "../../envs/ired.yaml"
        params:
            look=lambda wc: PLAN.look_params(int(wc.budget)),
            code=CODE["study"],
        script:
            "../scripts/look.py"
