"""Native jobs and openai_route jobs: what a job becomes on the engine and what comes back; no transport (runpod SDK) here."""
