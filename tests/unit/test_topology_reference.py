"""docs/reference/topology.md is generated from the topology's models
(scripts/topology_reference.py): every field must say what it means, and the file must be
what the script writes now, so that a field added or changed is documented with it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "topology_reference.py"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("topology_reference", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def test_every_field_of_every_topology_model_has_a_description() -> None:
    generator = _generator()
    missing = [f"{model.__name__}.{name}" for model in generator.every_model()
               for name, info in model.model_fields.items()
               if not (info.description or "").strip()]
    assert missing == [], ("fields without a description: add a docstring under each in "
                           "failover/topology/models.py, then run "
                           "`python scripts/topology_reference.py`")


def test_every_topology_model_is_in_the_reference() -> None:
    generator = _generator()
    shown = {section.model for section in generator.sections()}
    assert sorted(m.__name__ for m in generator.every_model() if m not in shown
                  and m.model_fields) == []


def test_the_reference_is_what_the_generator_writes_now() -> None:
    generator = _generator()
    written = (ROOT / "docs" / "reference" / "topology.md").read_text()
    assert written == generator.render(), (
        "docs/reference/topology.md is out of date: run `python scripts/topology_reference.py`")
