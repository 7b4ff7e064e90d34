"""The RunPod Serverless vLLM worker.

Data flows one way: env -> config.settings -> model_files (where the weights are) -> parallel (the plan)
-> serving.engine (vLLM's engine) ; job input -> serving.jobs / serving.openai -> engine -> stream chunks.

    model_files/  find, bake or download the model; read its config.json (no torch, no vLLM)
    parallel/     tensor/pipeline-parallel rules, GPU discovery, memory plan (no torch, no vLLM)
    serving/      the engine's lifecycle and the job handler, native and OpenAI routes
    vllm_api.py   the one module that imports vLLM
    fitness.py    the start-up check the runpod SDK runs before the first job
    plan.py, bench.py, tiny_model.py   command-line tools (python -m worker.<name>)
"""
