import os; os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL","3")
from pathlib import Path
from dataclasses import asdict
import json
from mtz_mobile.data import load_task_data
from mtz_mobile.reference import train_reference
out = Path(os.environ.get("PAIRING_WORK", "/tmp/pairing_research")) / "refs5"; out.mkdir(exist_ok=True)
for name, spec, seed in (("fine", "fashion-mnist", 1), ("coarse", "fashion-mnist-coarse", 2)):
    p = out / f"{name}.keras"
    if not p.exists():
        rec = train_reference(load_task_data(spec), p, seed, epochs=4, arch="lenet5", verbose=0)
        (out / f"{name}.json").write_text(json.dumps(asdict(rec), default=str))
        print(name, rec.test_error, flush=True)
