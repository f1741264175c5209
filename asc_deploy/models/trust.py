"""What a model folder may ask of this process: its own code, or loading a pickle.

Both are refused unless the user opts in, with a line naming the opt-in; no torch or
transformers here, so the CLI sets the opt-ins before any verb imports them.
"""

from __future__ import annotations

import json
from pathlib import Path

from asc_deploy.errors import UserError

PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")
SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")


class OptIns:
    """What the user allowed for every model this process loads (`asc-deploy
    --trust-remote-code --allow-pickle VERB`); a call's own `trust_remote_code` adds to it."""

    trust_remote_code = False
    allow_pickle = False


def check_trusted_folder(folder: Path, trust_remote_code: bool = False) -> None:
    """Refuse, unless the user opted in, a folder that asks to run its own code (`auto_map`,
    which transformers ignores without a word when `model_type` is a stock one) or whose only
    weights are a pickle (loading one runs whatever it references, unless torch refuses)."""
    raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if raw.get("auto_map") and not (trust_remote_code or OptIns.trust_remote_code):
        raise UserError(
            f"{folder}/config.json has auto_map ({', '.join(raw['auto_map'])}): the folder asks "
            "to run its own code; pass --trust-remote-code (asc-deploy --trust-remote-code VERB, "
            "or trust_remote_code: true in a run config) if you trust it"
        )
    pickled = [n for n in PICKLE_WEIGHTS if (folder / n).is_file()]
    safe = any((folder / n).is_file() for n in SAFE_WEIGHTS)
    if pickled and not safe and not OptIns.allow_pickle:
        raise UserError(
            f"{folder} holds only pickled weights ({pickled[0]}); re-save the model as "
            "safetensors, or pass --allow-pickle (asc-deploy --allow-pickle VERB) if you trust it"
        )
