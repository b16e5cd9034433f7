# Make models/{model}/ ready offline (GGUF conversion, hub copy, or dummy-weight architecture).


rule prepare_model:
    output:
        directory("models/{model}"),
    params:
        model=get_model_params,
        config=CONFIG_PATH,
    log:
        f"{RESULTS}/logs/models/{{model}}.log",
    priority: PREP_PRIORITY
    container:
        get_image("transformers-naive")
    shell:
        "servingbench prepare-model --config {params.config:q} --model {wildcards.model:q} --out {output:q}"
        " > {log:q} 2>&1"


# The llamacpp arm's weights: the folder's tensors, same dtype, as GGUF (servingbench.host.gguf_export).
rule prepare_gguf:
    input:
        model="models/{model}",
    output:
        gguf="models/{model}.gguf",
        record="models/{model}.gguf.json",
    params:
        model=get_model_params,
        config=CONFIG_PATH,
    log:
        f"{RESULTS}/logs/models/{{model}}.gguf.log",
    priority: PREP_PRIORITY
    container:
        get_image("transformers-naive")
    shell:
        "servingbench prepare-gguf --config {params.config:q} --model {wildcards.model:q} --model-dir {input.model:q}"
        " --out {output.gguf:q} > {log:q} 2>&1"
