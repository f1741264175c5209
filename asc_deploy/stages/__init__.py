"""The stages of `asc-deploy run`, one declared function each (see core.py for what that means).

| stage | module | returns |
|---|---|---|
| finetune, profile, select, prune, recover | compress.py | ModelFolder, Profile, Candidates, ... |
| export | deploy.py | ArtifactSet |
| evaluate, bench | measure.py | Evaluation, BenchRun |
"""
