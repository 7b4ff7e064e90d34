"""Everything before the first job: settings checks, download, adapters, parallel plan, compile cache, cluster, the environment vLLM sees."""
