# servingbench: which LLM serving framework to run, for this model and workload, on this GPU.
#   GPU host:  snakemake --cores 1 --use-singularity --singularity-args="--nv"
#   CPU demo:  snakemake --cores 1 --configfile configs/cpu.yaml
# No `configfile:` directive on purpose: Snakemake deep-merges it with --configfile, which
# would leak config.yaml's arms and models into configs/cpu.yaml. common.smk loads
# config.yaml only when no --configfile was given.

include: "rules/common.smk"


# summary.csv too: after a failed or interrupted run, onerror leaves a partial report/index.html
# and moves summary.csv aside. Snakemake treats an existing target as up to date even when the
# intermediate files behind it are missing, so with the report alone the next run would do
# nothing; asking for summary.csv makes it redo exactly the failed and missing cells, then both.
# Every cell and sweep is a target in its own right: Snakemake does not rebuild a missing
# intermediate file whose downstream outputs are up to date, so a deleted (or failed) cell
# would otherwise never rerun under an existing report.
rule all:
    input:
        cell_targets(),
        sweep_targets(),
        "report/index.html",
        "results/summary.csv",


include: "rules/models.smk"
include: "rules/workloads.smk"
include: "rules/measure.smk"
include: "rules/sweeps.smk"
include: "rules/report.smk"


onsuccess:
    stop_pooled_servers()


onerror:
    stop_pooled_servers()
    render_partial_report()
