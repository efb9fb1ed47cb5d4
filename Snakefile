# IRED negative-mining study: data → train (strategy × seed) → evaluate → report.
#   snakemake --cores 4 --resources gpu=1                      # default pilot (config/config.yaml)
#   snakemake --cores 4 --resources gpu=1 --configfile config/paper.yaml
#   snakemake figures --forcerun plot_main plot_ablation plot_stability       # redraw figures from cached tables
#   snakemake --report report.html                             # browsable HTML report
from snakemake.utils import min_version

min_version("8.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/ladder.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        REPORT_TARGETS,
