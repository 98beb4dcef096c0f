#!/usr/bin/env bash
# End to end on the bundled digits models: convert, quantize, eval (integer mode) with a CI gate,
# inspect. Uses the committed models and data; nothing is retrained. Outputs go to out/.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p out

# model  CI bar (accuracy at T=8 the run must reach, else eval exits 1)
for spec in "cnn 0.97" "mlp 0.97" "vit 0.95"; do
  read -r model bar <<<"$spec"
  echo "== digits_${model}: convert -> quantize -> eval (integer reference simulator)"
  spikeport convert  "examples/digits_${model}.onnx" --calib examples/digits_calib.npz -o "out/${model}.spk"
  spikeport quantize "out/${model}.spk" --calib examples/digits_calib.npz --target sim -o "out/${model}_q.spk"
  spikeport eval     "out/${model}_q.spk" --data examples/digits_test.npz -T 1,2,4,8 \
                     --onnx "examples/digits_${model}.onnx" \
                     --json "out/${model}.json" --plot "out/${model}.png" --require "8:${bar}"
  echo
done

echo "== summary: held-out test accuracy (540 digits), integer mode"
python - <<'PY'
import json
rows = {m: json.load(open(f"out/{m}.json")) for m in ("cnn", "mlp", "vit")}
ts = [r["T"] for r in rows["cnn"]["records"]]
print("| model | ANN | " + " | ".join(f"SNN T={t}" for t in ts) + " |")
print("|---|---:|" + "---:|" * len(ts))
for m, rep in rows.items():
    accs = " | ".join(f"{100 * r['accuracy']:.2f}" for r in rep["records"])
    print(f"| digits_{m} | {100 * rep['ann']['accuracy']:.2f} | {accs} |")
PY
echo
echo "== digits_cnn on a microcontroller: emit C99, verify bit for bit on the host, run on Cortex-M3"
spikeport emit   out/cnn_q.spk --target c -o out/cnn_c
spikeport verify out/cnn_q.spk out/cnn_c --data examples/digits_test.npz -n 540 -T 8
if command -v arm-none-eabi-gcc >/dev/null && command -v qemu-system-arm >/dev/null; then
  spikeport flash out/cnn_c --board qemu-mps2-an385 --data examples/digits_test.npz -n 20 -T 4
else
  echo "(skipping the QEMU run: gcc-arm-none-eabi / qemu-system-arm not installed; make test installs them)"
fi
echo
spikeport inspect out/cnn_q.spk
echo "plots: out/cnn.png out/mlp.png   reports: out/cnn.json out/mlp.json"
