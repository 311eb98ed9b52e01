#!/usr/bin/env python3
"""The engine's batch plan for the reference recipe, in Python, so that PyTorch trains on exactly
the batches the engine trains on (benches/real_data_compare.sh).

Ports, line for line:
- src/rng.rs: `mix64` (SplitMix64's finaliser), `Rng` (`next_u64`, `uniform`, `below`);
- src/train/schedule.rs: `batches_per_pass`, `batch_indices` (a Fisher-Yates shuffle per pass of
  each task, seeded by (seed, task, pass)); the round-robin plan (every step trains one batch of
  every task, so task t's k-th batch is trained at step k, the smaller tasks starting new passes);
- src/data/cs224n.rs: the train-file reader (one CSV record per line, tab delimiter, `""` escapes,
  blank lines passed over, a malformed record skipped), so that an index means the same example.

`python3 benches/real_data_plan.py --self-check` compares it with values printed by the engine's
own code (the constants below) and exits non-zero on a difference.
"""

import csv
import os
import sys

M64 = (1 << 64) - 1
TASKS = ("sst", "quora", "sts")  # the reference recipe's order (the task index seeds the shuffle)
FILES = {"sst": "ids-sst-train.csv", "quora": "quora-train.csv", "sts": "sts-train.csv"}
COLUMNS = {"sst": (["sentence"], "sentiment"), "quora": (["sentence1", "sentence2"], "is_duplicate"),
           "sts": (["sentence1", "sentence2"], "similarity")}
SEED = 11711
BATCH = 16


def mix64(z):
    z &= M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


class Rng:
    def __init__(self, seed):
        self.state = seed & M64

    def next_u64(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & M64
        return mix64(self.state)

    def uniform(self):
        return (self.next_u64() >> 11) * (1.0 / (1 << 53))

    def below(self, n):
        # Rust: (uniform * n as f64) as usize % n.max(1); the cast truncates toward zero
        return int(self.uniform() * n) % max(n, 1)


def batches_per_pass(n, batch):
    return max(-(-n // batch), 1)


_orders = {}


def pass_order(seed, task, n, pass_):
    """The shuffled order of pass `pass_` over task `task`'s n examples (cached: a pass is
    shared by all its batches)."""
    key = (seed, task, n, pass_)
    if key not in _orders:
        order = list(range(n))
        rng = Rng(mix64(seed ^ mix64(task + 1) ^ mix64(0xBA7C0000 + pass_)))
        for i in range(n - 1, 0, -1):
            j = rng.below(i + 1)
            order[i], order[j] = order[j], order[i]
        if len(_orders) > 8:
            _orders.clear()
        _orders[key] = order
    return _orders[key]


def batch_indices(seed, task, n, batch, k):
    per_pass = batches_per_pass(n, batch)
    pass_, pos = divmod(k, per_pass)
    order = pass_order(seed, task, n, pass_)
    return order[pos * batch:min((pos + 1) * batch, n)]


def epoch_steps(sizes, batch=BATCH):
    """Round-robin: an epoch is the largest task's passes."""
    return max(batches_per_pass(n, batch) for n in sizes)


# ---- the reader (src/data/cs224n.rs) ----

def _parse_line(line):
    """One line as one CSV record, or None when a quoted field does not close on it."""
    try:
        rows = list(csv.reader([line + "\n"], delimiter="\t", strict=True))
    except csv.Error:
        return None
    if len(rows) != 1 or any("\n" in f for f in rows[0]):
        return None
    return rows[0]


def _label(task, text):
    text = text.strip()
    if not text:
        return None
    try:
        if task == "sst":
            c = int(text)
            return c if 0 <= c < 5 and text.lstrip("+").isdigit() else None
        v = float(text)
    except ValueError:
        return None
    if task == "quora":
        return v if v in (0.0, 1.0) else None
    return v if 0.0 <= v <= 5.0 else None


def read_train(task, path):
    """The examples of a train file as the engine reads them: (id, a, b or None, label)."""
    with open(path, "rb") as f:
        data = f.read()
    lines = [l[:-1] if l.endswith(b"\r") else l for l in data.split(b"\n")]
    lines = [l for l in lines if l]
    header = _parse_line(lines[0].decode("utf-8"))
    header = [h.strip() for h in header]
    if header and header[0].startswith("\ufeff"):
        header[0] = header[0][1:].strip()
    sentences, label_col = COLUMNS[task]
    at = {name: header.index(name) for name in ["id"] + sentences + [label_col]}
    out, skipped = [], 0
    for raw in lines[1:]:
        try:
            rec = _parse_line(raw.decode("utf-8"))
        except UnicodeDecodeError:
            rec = None  # the engine checks UTF-8 per field; none of the shipped files has a bad byte
        if rec is None or len(rec) != len(header):
            skipped += 1
            continue
        ident = rec[at["id"]].strip()
        sents = [rec[at[s]].strip() for s in sentences]
        label = _label(task, rec[at[label_col]])
        if not ident or any(not s for s in sents) or label is None:
            skipped += 1
            continue
        out.append((ident, sents[0], sents[1] if len(sents) > 1 else None, label))
    return out, skipped


def load(data_dir):
    return {t: read_train(t, os.path.join(data_dir, FILES[t]))[0] for t in TASKS}


def step_batches(data, step, seed=SEED, batch=BATCH):
    """The examples of every task that round-robin step `step` (0-based) trains, in task order."""
    return [(t, [data[t][i] for i in batch_indices(seed, ti, len(data[t]), batch, step)])
            for ti, t in enumerate(TASKS)]


# ---- the self-check: values printed by the engine's own code (src/rng.rs, src/train/schedule.rs,
# src/data/cs224n.rs) from a scratch program linking the engine library, not kept in the repo ----

# (printed by the engine at 2026-11-29, b14fcba; seed 11711, batch 16, data/ as shipped)
ENGINE_RNG_11711 = [7338110684221511704, 7407165178279914675, 522992141996134107]
ENGINE_BELOW_37 = [15, 19, 28, 28, 31]  # Rng(mix64(5)).below(37), five draws
ENGINE_BATCH_INDICES_3_1_37_8 = [[31, 20, 22, 33, 3, 12, 24, 10], [2, 21, 15, 14, 28, 0, 17, 34], [23, 29, 4, 8, 6, 32, 18, 9], [27, 13, 7, 11, 16, 36, 19, 1], [5, 35, 25, 30, 26], [36, 6, 25, 24, 15, 11, 18, 16]]
ENGINE_SIZES = {'sst': 8544, 'quora': 13998, 'sts': 6040}
ENGINE_FIRST_IDS = {  # (task, step) -> the batch's example ids, comma-joined
    ('sst', 0): "b43cf7c090ded984687ae863b,512fa5a07fd848293eb8b947f,0dc557112f6796ef80d43ea54,31f03d3fc00200e49c73a42d0,aab39d74d33be73b1b18c39cf,ddfa3b7471e937e166ca27d59,a626153f81f5bb32a653f23a0,3dc7732740369bb179c00d7a7,b2b2fe4cf56bc99abd03a0fbc,33c379ba250016e6d7b3b60e0,a756d6bfa9b3401a238922cfe,9e804348ebc11b7a7e3da2866,010625320b78209e5a7ac226f,b2ea72b2d2843152bf0928187,9e4389defaa5040db48908aa2,f20006fcd0b65400cdfc46aa5",
    ('sst', 1): "4da42ce8cd50bde2acac3d99c,4deb7e15682981b016eceb844,06b34d4686c817316d922cf6e,5a9bdba299a306ead4263d979,0cbdc424fe0e890c5a4db95df,fb50fdc83e675128e4de7b8a1,e59ecb66d5b0ac3461ae8e1dc,968941dc2954d897f87ce3dca,cf092f8f4774ffd03a8906a0f,423a147d674d0d3a411354e63,1adcbd5dd743ff3de96217d81,f781a086adae92e72677bf9e5,9efd7d775efe215f352c50d31,49ef2667a22e372fcbe3955aa,441e1236873ce4f6d0cea42d6,d5aa25b6463042efc57bf3fd6",
    ('sst', 2): "d8038fe3041631f459c1c707f,f3057699fd69de92b2a572151,0ce86519d22c42498aacfc32c,f3749484f05d59201676a3de8,9f7d9a7b8d49e6dd71349e32c,5710e6d11831ed11259c73f25,621dae7e2458873ea1f4e20a3,bc8ba76cf73dff508abb2d62f,9daf741f28307734e8ccbc1dc,dbfab5f6f234214f1a18f105a,45eb93e5898d8b27fcf792173,d61de0e8fc7f65b2baa9a8274,b65ad7c33ec2391a9b4fd158f,66f6a42e24de58e8e5d0243c9,e08d41a39bfeefcaa3e5390ba,01a7b363e6ae50fce5425ad66",
    ('sst', 400): "7d8a22132a65856ad387fe482,3e7199b80c7b9f18ea70552b2,9142f973f5d6d764269c344e4,04c3031c88ca304489f2856b1,79b2005b2092779007734e35c,d49bc4b2d615e5442dd7b79de,f13b87ad8bd31438da09ff5ad,645838915c5560444b7ccdcbf,568b17e6400babe9b0cd97a9c,838d2db400fe2ce5e6acc4d45,29fb4918e126154170b96daf0,22feba3bff56807f0bb11d541,1e3c26bd7203de72b1aae330b,e444c338796eafc52dc2bb491,2473e9427c68c5be8eb182162,a359c72bbbb7748a33ac9458c",
    ('sst', 874): "34dfc09e748c4ff930b3ba4da,108747559bc3f034998ff3fe0,f46f5d095eb07e7e2ab876806,4a2e6e47dc117e8edd075dec5,6d8fa71b7da5236e04528ddde,f5d81691282de720b139762e0,858419ce766dc5a792a843805,0a7ee73ed3b6ce599f5713ca1,5fee641fbbe929bc35b07d001,166223ba529b3cb4761caaddf,cb0deb18b14eb82c5a29a4e88,f6cb0e6590b303dd1e1ac3941,0924fde5b6f4f23c95b3927ac,126b7ec3b60bab84661cc1525,c2662177f5333c2e2ef248023,9b30c2fff7fdfd697f93eccee",
    ('quora', 0): "8382cd4e9e5e13a49b3f57913,250c132a2de70ecd99d81e769,7ebf8daa02ba361abe3778b83,8fe3d1211e4462ac53ac0821a,21f4870c988442de1d0890b8e,fd941db80ce3c44afe57a7e40,d130473705c0c6bf57f63cf7d,824e26220509e0d8c9dee4e91,9505d350c07d296a4492abd72,3c7f401cd77d2ff275f0a9862,6e0d175b86e1c66d1ae92f11e,099d58e5e2145304324d29371,349480ea1a74d9a7202037837,42dcbd6b19a3d314220f43397,d9a54403f68ab9a99b71e4901,fa9e7caf22318f5fe911fd26d",
    ('quora', 1): "ff58456e9c1e2e699be11609c,8f7a722f9458c1aecc2a57691,1674d728dcbd69ae06bdec7b8,dedde41b63cbcfe392053341b,b7cef26c94fc4e00eabae4a2e,00b80c561ad088c9c34c99ab4,1023bbd3c29e8242286ecd4ac,08671c5fbc6e808a48aeb3628,403069662e87a88932a058ade,81ce1bade107df0052fee87e7,fad061608e8e343d1af19b42e,e62078106b070eba516efec6c,fccbe1b0cc8ff8790c82589de,bb56db24402719e7855f1da1f,dcda31a1786d224bef47f6bd8,6b93e29ce72b15bf04c338822",
    ('quora', 2): "6c5edfde9270ad5d5c0395ba5,d2d9ae84536053075be62d85c,1567a352b8d57b1a22b1c483c,1f8f1f09d2b560fa0b183f9b0,e40227718d83a5a5b2d393c1e,5c558f64a534ccfc3dd96dbb8,b14e57492ea7920f3f5c9d9d6,a83ad91cdcaaf1a348ae0d333,7e500284971993ba26a8d8b32,fc80814f524a8e21a66983525,b07580ac8a77501abeb0fe763,c49c228ee6610dae6a6094418,82c58724a6747a21d5dc3397e,83a4af895c1ea242b7f0f37f2,fc9d3fd8c2c55dd42227d80a9,f5a3ba284de5327427b88c4e4",
    ('quora', 400): "53980b12085cf85f5d8f34554,b4c3b0e4d5df13e914b4f0400,b0c8d754cab6c3fb89046085e,27cb452e92172fc21d6356625,edd3e271c6f73a2684a2c1f87,2979a688138965b143a7f534a,6b4f6e9933034a0279da46ec4,13060f527aea1be2ae9e43fdf,a84f034b97ba2b58b492e8976,b82f403baf1617d70da771941,605119b6538d581e102563b3f,ad8c4d82d89e4daa1cad441fb,c79d3cdfba5fe935782b017e6,402e0fcb25cd8cb0fec135aeb,8f2bb4b2ab9616792b6a27e7d,6fbe744c6920bd77b04b25937",
    ('quora', 874): "6c3b461d0db11d7f3462a9b66,bb7091ba5574fe1e589212a3d,395879eccd2c1a9d2b32c30f5,1365e7846166884434fb3bff6,3a02dfc1779c6df55a190dcd5,e80a20135be2b9c8c971f07ea,4a422852e87d327db919898a4,3a54c94fb3f8011d854b12057,fc28edc132be60ae6919dc691,d64260b4e8492b0b6965251be,4984ffd55648609dcfddefc46,5eb2e1882dac43d29afe7300f,bdf4e2d9e7cbf9c549435a066,407d8333312faca65558465c9",
    ('sts', 0): "807567d1f4e8f9b13f908f91c,bc867cdf5f3f1e276b8b0131f,b57df837ccbc48210ec6c9958,0fabd98100a9ab5c9eb5f634f,f0f696999418fd2e9d9b4220d,f94715c28b9bcd477878aa5be,eb6c49a58a3b2066940cbdba1,c89fef1fab5524114045b2648,562891ec226d7a469e93ea10e,696c6cdc18237db6e9708a51f,50f6f83c2a9aecf3595a2e788,7121675409447045b5749c948,72d0e4b3286a01f4a54316122,aba0b1fc595751be3922e735d,136ac3e752a440fe75abecbb2,b284bdf9e3ad65cf0d3426e43",
    ('sts', 1): "f48ad39642adfca0621a4183c,1db186a777b1b74157f6da7fd,cb118fff0f27bdb3d8819218b,44aa70f4a44f08e59332087e5,b1bd895e2651561ce51f4755b,08b78e6b7f331c0043447596b,f2eef5f8ab46739c70714d700,a882fe0320a17a8ed73b6319d,e3cc850c68c2b1f4aaf0bcca0,72c9fb7e8cb2cecc59aa9d858,0dc04026d269dec889344e267,f569c8324cb3fe4937c838167,6baec4a701eb9735ba46d37e3,bcc091f3708169b64c3ec7cb3,e97325ea9e899a50a80e1390c,bdcd20138495aad23bac03741",
    ('sts', 2): "ab454788eabc6d18e3dc3e8e0,b93b82535e1ea6f861f0811bb,725378512ea887fee0653ee06,b2c402a24258bc8924d73d695,7b6c924a492838c1c77027307,0a1c87e2dc47af0e18c2e83ea,2a3086cf0d793b6db05e82186,4cb991b9ce56541c97fd91969,f6b0743012cba7290ec514386,b48881a4098cfcae5ad0a5b3a,3e46e9c048e9f7e6ea3a724b7,0b4b9319e13317d2c18078aea,07f30a9c1980fa63344db3466,bfb1a423cabefdf5758ce7abc,3faaa4c725762afdcf2a15814,d9fd3257a6de777628967fc5e",
    ('sts', 400): "2519c725ef1824a518d4127dc,252c0c2c62b79c6a754cf8d33,d8422334f196b7f366ea39d46,721deb2f956bf576d0746955f,d0c6ac841a2bb6a1e64c0e5a0,c6adb76cdfa003e44f257d6a3,0bf7e94b3970ee7f4c2e21111,9fc980d297811cc7ea0c0975c,ac2da8aca0fa0ffb69107ad99,1adfc3a79f0b7db0e81848988,bb115b93c916e54b97261ec8e,23cc8e23d3a67612cfdc21ce6,c648c4d7676025068c388f5f3,d40a362697ee193a348fead49,7d17f4b41a6ba9c9b4aadc374,a607a3f22b592ada45df88ce2",
    ('sts', 874): "8038da6010bdd53d2015d1dd6,4bd625bb6ca47cdfc59137896,a1514720cb5115db81c24af8d,e5a2bdd1ab9ee8a8a56576cec,a2a82ed3e1b499ab59f4f72a1,c0c1de428b1ae549afb5daaeb,c3d90855704aa28202f73a600,6357ee3f9809ed4a9de40a400,91a5ae17fc7804b250be2625b,4af3d3b992c59752873be1b97,87136f395b0d562efb1c876a3,c69c481b52d921dde179467b0,9ea65e0a10f26376e888ac59d,793144f02975c53db0bf2526d,7e0fa4969167a41a7c345e105,7fe7d52231aefe20272f684ab",
}
# The engine's tokenizer on those batches (truncated to 128, padded to each batch's longest):
# real (attention-mask) and padded (batch x longest) tokens per task over the first N steps.
ENGINE_TOKENS = {100: {'sst': {'real': 39997, 'padded': 76944}, 'quora': {'real': 49265, 'padded': 95488}, 'sts': {'real': 45744, 'padded': 101856}}, 875: {'sst': {'real': 351056, 'padded': 663840}, 'quora': {'real': 427494, 'padded': 825374}, 'sts': {'real': 398154, 'padded': 862304}}}


def self_check(data_dir):
    bad = []
    r = Rng(SEED)
    got = [r.next_u64() for _ in range(3)]
    if got != ENGINE_RNG_11711:
        bad.append(f"Rng(11711).next_u64: {got} != {ENGINE_RNG_11711}")
    r = Rng(mix64(5))
    got = [r.below(37) for _ in range(5)]
    if got != ENGINE_BELOW_37:
        bad.append(f"below(37): {got} != {ENGINE_BELOW_37}")
    for k, want in enumerate(ENGINE_BATCH_INDICES_3_1_37_8):
        got = batch_indices(3, 1, 37, 8, k)
        if got != want:
            bad.append(f"batch_indices(3, 1, 37, 8, {k}): {got} != {want}")
    data = load(data_dir)
    sizes = {t: len(v) for t, v in data.items()}
    if sizes != ENGINE_SIZES:
        bad.append(f"train sizes {sizes} != the engine's {ENGINE_SIZES}")
    for (t, step), want in ENGINE_FIRST_IDS.items():
        got = ",".join(e[0] for e in dict(step_batches(data, step))[t])
        if got != want:
            bad.append(f"{t} step {step}: ids {got} != the engine's {want}")
    for b in bad:
        print("real_data_plan: MISMATCH", b, file=sys.stderr)
    n = 3 + len(ENGINE_BATCH_INDICES_3_1_37_8) + 1 + len(ENGINE_FIRST_IDS)
    print(f"real_data_plan: self-check {'FAILED' if bad else 'ok'} ({n - len(bad)} of {n} checks agree "
          f"with the engine; sizes {sizes}, {epoch_steps(list(sizes.values()))} steps an epoch)")
    return not bad


if __name__ == "__main__":
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    data_dir = sys.argv[2] if len(sys.argv) > 2 else os.path.join(root, "data")
    if len(sys.argv) > 1 and sys.argv[1] == "--self-check":
        sys.exit(0 if self_check(data_dir) else 1)
    print(__doc__)
