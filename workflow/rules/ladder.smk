# comparison.ladder.until_stable: the ladder grows until the answer stops moving (method §8.1;
# diffusion_lib/analysis/growth.py). One checkpoint per look: the look at ladder top B reads the rungs up to B
# and either stops or adds the rung of 2B steps (its trunk piece continues from the last saved state,
# its decay branch and evaluation are ordinary trunk/branch/evaluate jobs), whose look comes next.
# The study's input functions follow the looks (study_top), so the whole growth happens in one
# snakemake invocation; nothing finished is retrained.
from diffusion_lib.analysis.growth import describe_looks, final_top, read_look, walk_looks

GROWTH = CFG["comparison"]["ladder"].get("until_stable") if LADDER else None


look_path = LAYOUT.look_path
# what until_stable did, written by aggregate. Named by max_steps and a report target: turning
# until_stable on (or raising max_steps) over a finished study asks for a file that does not exist,
# which reruns the study and its looks (a checkpoint reached only through an input function is not
# asked again while the study's outputs exist)
GROWTH_FILES = {"growth": f"{STUDY}/tables/growth-max{GROWTH['max_steps']}.json"} if GROWTH else {}
REPORT_TARGETS += list(GROWTH_FILES.values())


def next_budget(top):
    """The rung a look at ``top`` would add (None above max_steps)."""
    return next((b for b in LAYOUT.grown_budgets if b > top), None)


def _asked_look(path):
    """A look's result, asking the checkpoint for it (Snakemake schedules it when it is missing)."""
    return read_look(checkpoints.look.get(budget=re.search(r"look-(\d+)\.json$", path).group(1)).output[0])


def looks_taken(wildcards=None):
    """Input functions: the looks in order, each asked of the checkpoint once the previous one grew."""
    return walk_looks(FULL, look_path, _asked_look) if GROWTH else []


def looks_on_disk():
    """Params and messages: the looks whose files exist (all of them by the time a job is scheduled)."""
    return walk_looks(FULL, look_path) if GROWTH else []


def study_top(looks):
    """The study's full budget after ``looks``: train.steps, or the largest rung added."""
    return final_top(FULL, looks)


def longest_trunk(top):
    """The study's longest constant-lr trunk: the branch point of its largest rung (None without a ladder)."""
    return max(r.branch_point for r in LAYOUT.rungs(RUNS[0]) if r.steps <= top) if LADDER else None


def growth_param(wildcards):
    """aggregate's growth param: what until_stable did (None when it is off)."""
    if not GROWTH:
        return None
    return {"first": FULL, "max_steps": GROWTH["max_steps"], "looks": [l.as_dict() for l in looks_on_disk()]}


if GROWTH and workflow.is_main_process:
    print(describe_looks(looks_on_disk(), FULL, GROWTH["max_steps"]), file=sys.stderr)


if GROWTH:

    localrules:
        look,

    checkpoint look:
        """One look of until_stable: is every verdict arm's trend per doubling flat on validation data
        over the ladder up to {budget} steps? If not, the next rung is added (within max_steps and the
        stability margin)."""
        input:
            curves=lambda wc: [e["curve"] for e in rung_index(int(wc.budget), compute_matched=False)],
            reference=LAYOUT.reference,
        output:
            look_path("{budget}"),
        log:
            f"{STUDY}/logs/look-{{budget}}.log",
        conda:
            "../../envs/ired.yaml"
        params:
            rungs=lambda wc: rung_index(int(wc.budget), compute_matched=False),
            next_budget=lambda wc: next_budget(int(wc.budget)),
            margin=lambda wc: PLAN.look_margin(int(wc.budget), next_budget(int(wc.budget))),
            comparison=CFG["comparison"],
            code=CODE["study"],
        script:
            "../scripts/look.py"
