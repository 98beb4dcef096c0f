#!/usr/bin/env bash
# End to end on the bundled models (digits CNN, MLP, ViT; the BERT-like text classifier):
# convert, quantize, eval (integer mode) with a CI gate, then the CNN as C on a Cortex-M3.
# Uses the committed models and data; nothing is retrained. Outputs go to out/.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p out

# model  data  CI bar (accuracy at T=8 the run must reach, else eval exits 1). convert -T 8:
# the T-aware conversion chooses thresholds for the T the gate checks (the other T columns of
# the table run the same graph; README's results convert once per T).
for spec in "digits_cnn digits 0.97" "digits_mlp digits 0.97" "digits_vit digits 0.95" \
            "text_bert text 0.93"; do
  read -r model data bar <<<"$spec"
  echo "== ${model}: convert -> quantize -> eval (integer reference simulator)"
  spikeport convert  "examples/${model}.onnx" --calib "examples/${data}_calib.npz" -T 8 \
                     -o "out/${model}.spk"
  spikeport quantize "out/${model}.spk" --calib "examples/${data}_calib.npz" --target sim -o "out/${model}_q.spk"
  spikeport eval     "out/${model}_q.spk" --data "examples/${data}_test.npz" -T 1,2,4,8 \
                     --onnx "examples/${model}.onnx" \
                     --json "out/${model}.json" --plot "out/${model}.png" --require "8:${bar}"
  echo
done

echo "== summary: held-out test accuracy (540 digits / 1,000 sentences), integer mode"
python - <<'PY'
import json
names = ("digits_cnn", "digits_mlp", "digits_vit", "text_bert")
rows = {m: json.load(open(f"out/{m}.json")) for m in names}
ts = [r["T"] for r in rows["digits_cnn"]["records"]]
print("| model | ANN | " + " | ".join(f"SNN T={t}" for t in ts) + " |")
print("|---|---:|" + "---:|" * len(ts))
for m, rep in rows.items():
    accs = " | ".join(f"{100 * r['accuracy']:.2f}" for r in rep["records"])
    print(f"| {m} | {100 * rep['ann']['accuracy']:.2f} | {accs} |")
PY
echo
echo "== digits_cnn on a microcontroller: emit C99, verify bit for bit on the host, run on Cortex-M3"
spikeport emit   out/digits_cnn_q.spk --target c -o out/digits_cnn_c
spikeport verify out/digits_cnn_q.spk out/digits_cnn_c --data examples/digits_test.npz -n 540 -T 8
if command -v arm-none-eabi-gcc >/dev/null && command -v qemu-system-arm >/dev/null; then
  spikeport flash out/digits_cnn_c --board qemu-mps2-an385 --data examples/digits_test.npz -n 20 -T 4
else
  echo "(skipping the QEMU run: gcc-arm-none-eabi / qemu-system-arm not installed; make test installs them)"
fi
echo
echo "== text_bert on a microcontroller: the transformer's integer LayerNorm, softmax, GELU and"
echo "   attention as C99 (int32 token ids and mask in, no float), checked bit for bit"
spikeport quantize out/text_bert.spk --calib examples/text_calib.npz --target c -o out/text_bert_c.spk
spikeport emit   out/text_bert_c.spk --target c --board nrf52840-dk -o out/text_bert_c
spikeport verify out/text_bert_c.spk out/text_bert_c --data examples/text_test.npz -n 200 -T 8
if command -v arm-none-eabi-gcc >/dev/null && command -v qemu-system-arm >/dev/null; then
  spikeport flash out/text_bert_c --board qemu-mps2-an385 --data examples/text_test.npz -n 4 -T 4
fi
echo
spikeport inspect out/digits_cnn_q.spk
echo "plots: out/<model>.png   reports: out/<model>.json"
