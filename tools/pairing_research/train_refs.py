import os; os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL","2")
from pathlib import Path
from mtz_mobile.data import load_task_data
from mtz_mobile.reference import train_reference_pair
d = load_task_data("fashion-mnist")
out = Path(os.environ.get("PAIRING_WORK", "/tmp/pairing_research")) / "refs"
if not (out/"reference.json").exists():
    train_reference_pair([d, d], out, epochs=8, verbose=0)
print("done")
