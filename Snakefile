# servingbench: which LLM serving framework to run, for this model and workload, on this GPU.
#   GPU host:  snakemake --cores 1 --use-singularity --singularity-args="--nv"
#   CPU demo:  snakemake --cores 1 --configfile configs/cpu.yaml
# No `configfile:` directive on purpose: Snakemake deep-merges it with --configfile, which
# would leak config.yaml's arms and models into configs/cpu.yaml. common.smk loads
# config.yaml only when no --configfile was given.

include: "rules/common.smk"


# Every cell, sweep and the summary are targets in their own right: Snakemake does not rebuild
# a missing intermediate whose downstream outputs are up to date, so a deleted or failed cell
# (or the summary that onerror moves aside after a failed run) would otherwise never be redone
# under an existing report.
rule all:
    input:
        cell_targets(),
        sweep_targets(),
        host_targets(),
        "report/index.html",
        str(sbr.summary_path(RESULTS)),


include: "rules/models.smk"
include: "rules/workloads.smk"
include: "rules/measure.smk"
include: "rules/report.smk"


onsuccess:
    stop_pooled_servers()


onerror:
    stop_pooled_servers()
    render_partial_report()
