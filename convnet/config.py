"""Net configuration files in cuda-convnet's INI format.

A net is described by a *layer definition* file (one ``[section]`` per layer: ``type``,
``inputs``, shapes, initialisation) and a *layer params* file (learning hyperparameters:
``epsW``, ``momW``, ``wc``, LRN constants ...), which may change between runs: a resumed run reads
it again. Both may also be one file, with the params keys inside each layer's section.

cuda-convnet2's own files load unmodified for the layer types convnet supports. Every key is
checked against the layer type's list: an unknown key is an error (it is usually a typo), except
the kernel-tuning hints ``sumWidth`` (cuda-convnet2) and ``partialSum`` (cuda-convnet), which
chose kernel variants on 2012 GPUs and are accepted and ignored. A params section naming no layer
of the net is reported as a warning, as cuda-convnet2 ignored it (its example params files carry
sections for layers of sibling nets).

Every error names the file, the section and the key: ``ConfigError`` carries them as attributes.
"""
import configparser
import os
import re

__all__ = ["ConfigError", "LayerSpec", "NetConfig", "load_config", "parse_neuron",
           "parse_schedule", "Schedule", "unsupported"]

TUNING_KEYS = ("sumWidth", "partialSum")
REQUIRED = object()  # marks a key without a default

# Said of what cuda-convnet or cuda-convnet2 accept but convnet does not implement, so that such a
# file is not mistaken for one with a typo ("unknown key (a typo?)").
UNSUPPORTED = "valid cuda-convnet syntax this version does not support"
# Keys of the two projects' layer sections that convnet has no use for (random sparse
# connectivity's channel count, Python init functions, weight sharing between layers, ...).
CUDA_CONVNET_KEYS = frozenset({
    "blocked", "center", "children", "end", "filterChannels", "initBFunc", "initCFunc",
    "initWFunc", "maxScale", "modulesX", "parts", "startX", "startY", "stdev", "sum", "superEps",
    "superMom", "tgtSize", "weightSource"})


class ConfigError(ValueError):
    """A mistake in a config file; the message starts with ``file [section] key:``."""

    def __init__(self, message, file=None, section=None, key=None):
        self.file, self.section, self.key, self.reason = file, section, key, message
        where = " ".join(p for p in (file, f"[{section}]" if section else None, key) if p)
        super().__init__(f"{where}: {message}" if where else message)


class LayerSpec:
    """One layer's keys as read from the files: ``values[key] = (text, file)``."""

    def __init__(self, name, index, file):
        self.name, self.index, self.file = name, index, file
        self.values = {}

    def error(self, key, message):
        file = self.values[key][1] if key in self.values else self.file
        return ConfigError(message, file, self.name, key)

    def has(self, key):
        return key in self.values

    def text(self, key):
        return self.values[key][0]


class NetConfig:
    """Parsed layer specs (in file order) plus the file texts a checkpoint stores."""

    def __init__(self, layers, def_path, params_path, def_text, params_text, warnings):
        self.layers = layers
        self.def_path, self.params_path = def_path, params_path
        self.def_text, self.params_text = def_text, params_text
        self.warnings = warnings


def unsupported(spec, key, what, hint=None):
    """The error for `what`, valid in cuda-convnet's files but not implemented here."""
    return spec.error(key, f"{what}: {UNSUPPORTED}" + (f"; {hint}" if hint else ""))


def _read_text(path):
    """A config file's text: UTF-8 (ASCII is UTF-8), else an error naming the line and byte."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", path) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise ConfigError(f"line {line}, column {column}: byte 0x{data[e.start]:02x} is not "
                          "UTF-8 (config files are read as UTF-8; save the file as UTF-8)",
                          path) from None


def _read_ini(path, text=None):
    if text is None:
        if not os.path.exists(path):
            raise ConfigError("no such file", path)
        if os.path.isdir(path):
            raise ConfigError("is a directory, expected a config file", path)
        text = _read_text(path)
    # Keys keep their case (epsW, filterSize); duplicate sections and keys are errors. A line is
    # `key=value` or `key: value` (Python 2's ConfigParser read both; old files use the colon).
    parser = configparser.RawConfigParser(strict=True, inline_comment_prefixes=None,
                                          comment_prefixes=("#", ";"), delimiters=("=", ":"),
                                          empty_lines_in_values=False)
    parser.optionxform = str
    try:
        parser.read_string(text, source=path)
    except configparser.DuplicateSectionError as e:
        raise ConfigError(f"section defined twice (line {e.lineno})", path, e.section) from None
    except configparser.DuplicateOptionError as e:
        raise ConfigError(f"key given twice in the section (line {e.lineno})", path, e.section,
                          e.option) from None
    except configparser.MissingSectionHeaderError as e:
        raise ConfigError(f"line {e.lineno}: text before the first [section]", path) from None
    except configparser.ParsingError as e:
        lines = ", ".join(str(n) for n, _ in e.errors)
        raise ConfigError(f"cannot parse line(s) {lines} (expected key=value or key: value)",
                          path) from None
    return parser, text


def load_config(def_path, params_path=None, *, def_text=None, params_text=None):
    """Reads a layer definition file and (optionally) a params file into a NetConfig.

    ``def_text`` / ``params_text`` replace reading the files (a checkpoint's stored copies).
    Key validation happens when the layers are built (convnet.layers), which knows each type's
    keys; this function checks the file structure and merges the two files."""
    dparser, def_text = _read_ini(def_path, def_text)
    layers, by_name = [], {}
    for i, name in enumerate(dparser.sections()):
        spec = LayerSpec(name, i, def_path)
        for key, value in dparser.items(name):
            spec.values[key] = (value.strip(), def_path)
        if "type" not in spec.values:
            raise ConfigError("layer has no 'type' key", def_path, name, "type")
        layers.append(spec)
        by_name[name] = spec
    if not layers:
        raise ConfigError("no layers defined (expected [name] sections with type=...)", def_path)
    warnings = []
    if params_path is not None or params_text is not None:
        pparser, params_text = _read_ini(params_path, params_text)
        for name in pparser.sections():
            if name not in by_name:
                warnings.append(f"{params_path} [{name}]: no layer of this name in {def_path}; "
                                "section ignored")
                continue
            spec = by_name[name]
            for key, value in pparser.items(name):
                if key in ("type", "inputs"):
                    raise ConfigError("belongs in the layer definition file, not the params file",
                                      params_path, name, key)
                # The params file wins: it is the file edited between runs.
                spec.values[key] = (value.strip(), params_path)
    return NetConfig(layers, def_path, params_path, def_text, params_text, warnings)


# -- value parsers: each takes (spec, key) and raises ConfigError naming file/section/key ------

# Numbers as a config writes them: ASCII decimal digits only. (Python's int() and float() also
# take '1_6', non-ASCII digits, 'inf' and 'nan': none of them is a size or a rate.)
_INT_RE = re.compile(r"[+-]?[0-9]+", re.ASCII)
_FLOAT_RE = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?", re.ASCII)
# The largest integer a config key takes: every size, count and index reaches the kernels as a
# 32-bit int (shape products are checked in 64 bits, and against memory, when the net is built).
INT_MAX = 2**31 - 1
# float32's largest finite and smallest normal magnitudes: every number reaches the kernels so.
FLT_MAX, FLT_MIN = 3.4028234663852886e38, 1.1754943508222875e-38


def parse_int(text):
    """A plain ASCII decimal integer ('12', '-3', '+4'); ValueError otherwise."""
    if not _INT_RE.fullmatch(text):
        raise ValueError(f"expected an integer (ASCII decimal digits), got {text!r}")
    return int(text)


def parse_float(text):
    """An ASCII decimal number ('0.01', '1e-3', '.5', '-2') that float32, the kernels' type,
    holds: 0, or a magnitude from FLT_MIN to FLT_MAX (a smaller one would become 0 or lose its
    precision, a larger one infinity, part way through a run); ValueError otherwise."""
    if not _FLOAT_RE.fullmatch(text):
        raise ValueError(f"expected a number (ASCII decimal, e.g. 0.01 or 1e-3), got {text!r}")
    v = float(text)
    if v != 0 and not FLT_MIN <= abs(v) <= FLT_MAX:
        raise ValueError(f"{text!r} is outside float32's range (0, or {FLT_MIN:.4g} to "
                         f"{FLT_MAX:.4g} in magnitude)")
    return v


def as_int(spec, key, lo=None, hi=None):
    """An integer key, within [lo, hi]; hi is at most INT_MAX."""
    text = spec.text(key)
    try:
        v = parse_int(text)
    except ValueError as e:
        raise spec.error(key, str(e)) from None
    hi = INT_MAX if hi is None else min(hi, INT_MAX)
    if lo is not None and v < lo:
        raise spec.error(key, f"must be >= {lo}, got {v}")
    if v > hi:
        raise spec.error(key, f"must be <= {hi}, got {v}")
    return v


def as_float(spec, key, lo=None, hi=None, lo_open=False):
    text = spec.text(key)
    try:
        v = parse_float(text)
    except ValueError as e:
        raise spec.error(key, str(e)) from None
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise spec.error(key, f"must be {'>' if lo_open else '>='} {lo}, got {v}")
    if hi is not None and v > hi:
        raise spec.error(key, f"must be <= {hi}, got {v}")
    return v


def as_bool(spec, key):
    text = spec.text(key).lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise spec.error(key, f"expected true/false or 1/0, got {spec.text(key)!r}")


def as_names(spec, key):
    names = [n.strip() for n in spec.text(key).split(",")]
    if not names or any(not n for n in names):
        raise spec.error(key, f"expected a comma-separated list of layer names, got "
                              f"{spec.text(key)!r}")
    return names


def as_choice(spec, key, choices):
    text = spec.text(key)
    if text not in choices:
        raise spec.error(key, f"expected one of {', '.join(choices)}, got {text!r}")
    return text


def split_list(text):
    """'a,b' -> ['a', 'b'], splitting only at commas outside brackets, so a schedule such as
    'step[base=0.01;epochs=30,60]' stays one item."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            items.append(text[start:i].strip())
            start = i + 1
    items.append(text[start:].strip())
    return items


def input_count(spec):
    """The number of layers named by the section's inputs= key (0 when it has none)."""
    return len(as_names(spec, "inputs")) if spec.has("inputs") else 0


def per_input(parse):
    """A parser of a per-input key of a layer with several inputs (cuda-convnet2's lists:
    'filterSize=3,5' for inputs=a,b). Returns a tuple with one value per input; one value is
    given to every input, as cuda-convnet2 does. Another number of values than of inputs is an
    error naming the key."""

    def parse_list(spec, key):
        n = max(1, input_count(spec))
        items = split_list(spec.text(key))
        if len(items) not in (1, n):
            raise spec.error(key, f"{len(items)} values for {n} inputs "
                                  f"({spec.text('inputs')}); give one value per input or one "
                                  f"value for all, got {spec.text(key)!r}")
        values = []
        for item in items * n if len(items) == 1 else items:
            # Parsed once per input: each input gets its own object (a schedule has state).
            one = LayerSpec(spec.name, spec.index, spec.file)
            one.values[key] = (item, spec.values[key][1])
            values.append(parse(one, key))
        return tuple(values)

    return parse_list


# -- neurons: relu, tanh[a,b], brelu[a], ... -------------------------------------------------

NEURON_ARGS = {"ident": 0, "relu": 0, "logistic": 0, "abs": 0, "square": 0, "sqrt": 0,
               "softrelu": 0, "nrelu": 0, "tanh": 2, "brelu": 1, "linear": 2, "log": 1,
               "drelu": 1}
NEURON_DEFAULTS = {"tanh": (1.0, 1.0), "linear": (1.0, 0.0), "brelu": (1.0, 0.0),
                   "log": (1.0, 0.0), "drelu": (1.0, 0.0)}
_NEURON_RE = re.compile(r"^([a-z]+)(?:\[([^\]]*)\])?$")


def parse_neuron(spec, key, supported):
    """'relu' -> ('relu', 0, 0); 'tanh[1.7159,0.6666]' -> ('tanh', 1.7159, 0.6666)."""
    text = spec.text(key)
    m = _NEURON_RE.match(text.replace(" ", ""))
    if not m or m.group(1) not in NEURON_ARGS:
        raise spec.error(key, f"unknown neuron {text!r}; known: {', '.join(sorted(NEURON_ARGS))}")
    kind = m.group(1)
    if kind not in supported:
        raise spec.error(key, f"neuron {kind!r} is not supported by this build; supported: "
                              f"{', '.join(sorted(supported))}")
    nargs = NEURON_ARGS[kind]
    args = [a for a in (m.group(2) or "").split(",") if a]
    if len(args) not in (0, nargs):
        raise spec.error(key, f"neuron {kind} takes {nargs} argument(s), got {text!r}")
    try:
        vals = [parse_float(a) for a in args] if args else list(NEURON_DEFAULTS.get(kind, ()))
    except ValueError as e:
        raise spec.error(key, f"bad neuron argument in {text!r}: {e}") from None
    vals += [0.0] * (2 - len(vals))
    return kind, vals[0], vals[1]


# -- learning-rate schedules -----------------------------------------------------------------

class Schedule:
    """A learning rate as a function of training progress.

    ``kind``: const | linear | exp | dexp (cuda-convnet2, driven by progress = epochs done /
    epochs planned) | step (÷factor at given epochs) | plateau (the paper's rule: ÷factor when
    the validation error has had no new best for ``patience`` tests, at most maxDrops times,
    and never before it first improved; state in ``drops``/``bad``/``best``/``first``)."""

    def __init__(self, kind, base, **kw):
        self.kind, self.base = kind, base
        self.tgt_factor = kw.get("tgtFactor", 1.0)
        self.num_steps = int(kw.get("numSteps", 1))
        self.epochs = kw.get("epochs", ())
        self.factor = kw.get("factor", 0.1)
        self.patience = int(kw.get("patience", 1))
        self.max_drops = int(kw.get("maxDrops", 3))
        self.drops, self.bad, self.best, self.first = 0, 0, None, None  # plateau state

    def value(self, epoch, progress):
        """Rate at fractional `epoch` (0-based, e.g. 2.5) and `progress` in [0, 1]."""
        p = min(max(progress, 0.0), 1.0)
        if self.kind == "const":
            return self.base
        if self.kind == "linear":
            final = self.base / self.tgt_factor
            return self.base * (1 - p) + final * p
        if self.kind == "exp":
            return self.base * (1.0 / self.tgt_factor) ** p
        if self.kind == "dexp":
            # numSteps plateaus from base down to base/tgtFactor, equally spaced in log space.
            i = min(self.num_steps - 1, int(p * self.num_steps))
            return self.base * (1.0 / self.tgt_factor) ** (i / max(1, self.num_steps - 1))
        if self.kind == "step":
            return self.base * self.factor ** sum(1 for e in self.epochs if epoch >= e)
        return self.base * self.factor ** self.drops  # plateau

    def observe(self, val_error):
        """Plateau schedules: called after each test with the validation error; returns True
        when the rate was just divided."""
        if self.kind != "plateau":
            return False
        if self.first is None:
            self.first = val_error
        if self.best is None or val_error < self.best - 1e-9:
            self.best, self.bad = val_error, 0
            return False
        if self.best >= self.first:
            # Still on the initial plateau (never improved yet): the error has not *stopped*
            # improving, it has not started; dividing the rate now would only delay the start.
            return False
        self.bad += 1
        if self.bad >= self.patience and self.drops < self.max_drops:
            self.drops, self.bad = self.drops + 1, 0
            self.best = val_error
            return True
        return False

    def state(self):
        return {"drops": self.drops, "bad": self.bad, "best": self.best, "first": self.first}

    def load_state(self, st):
        self.drops, self.bad, self.best = int(st["drops"]), int(st["bad"]), st["best"]
        self.first = st.get("first")

    def __str__(self):
        if self.kind == "const":
            return f"{self.base:g}"
        if self.kind == "step":
            return f"step[{self.base:g}/÷{1 / self.factor:g}@{','.join(map(str, self.epochs))}]"
        if self.kind == "plateau":
            return f"plateau[{self.base:g}]"
        return f"{self.kind}[{self.base:g}→{self.base / self.tgt_factor:g}]"


_SCHEDULE_KEYS = {
    "const": {"base"},
    "linear": {"base", "tgtFactor"},
    "exp": {"base", "tgtFactor"},
    "dexp": {"base", "tgtFactor", "numSteps"},
    "step": {"base", "epochs", "factor"},
    "plateau": {"base", "factor", "patience", "maxDrops"},
}
_SCHEDULE_COUNTS = ("numSteps", "patience", "maxDrops")
_SCHEDULE_RE = re.compile(r"^([a-z]+)\[(.*)\]$")


def parse_schedule(spec, key):
    """'0.01' | 'const[base=0.01]' | 'linear[base=;tgtFactor=]' | 'exp[base=;tgtFactor=]' |
    'dexp[base=;tgtFactor=;numSteps=]' | 'step[base=0.01;epochs=30,60,80;factor=0.1]' |
    'plateau[base=0.01;factor=0.1;patience=1;maxDrops=3]'."""
    text = spec.text(key).replace(" ", "")
    try:
        return Schedule("const", parse_float(text)) if "[" not in text else _parse_bracketed(text)
    except ValueError as e:
        raise spec.error(key, f"{e} in {spec.text(key)!r}; expected a number or one of "
                              + ", ".join(f"{k}[{';'.join(sorted(v))}]"
                                          for k, v in _SCHEDULE_KEYS.items())) from None


def _parse_bracketed(text):
    m = _SCHEDULE_RE.match(text)
    if not m:
        raise ValueError("bad schedule syntax")
    kind, body = m.group(1), m.group(2)
    if kind not in _SCHEDULE_KEYS:
        raise ValueError(f"unknown schedule {kind!r}")
    kw = {}
    for item in filter(None, body.split(";")):
        k, eq, v = item.partition("=")
        if not eq or k not in _SCHEDULE_KEYS[kind]:
            raise ValueError(f"unknown schedule argument {k!r} for {kind}")
        if k == "epochs":
            kw[k] = tuple(sorted(parse_float(e) for e in v.split(",") if e))
        elif k in _SCHEDULE_COUNTS:
            kw[k] = parse_int(v)
            if not 0 <= kw[k] <= INT_MAX:
                raise ValueError(f"{k} must be in 0..{INT_MAX}, got {v}")
        else:
            kw[k] = parse_float(v)
    if "base" not in kw:
        raise ValueError(f"schedule {kind} needs base=")
    if kw.get("tgtFactor", 1.0) <= 0 or kw.get("numSteps", 1) < 1:
        raise ValueError("tgtFactor must be > 0 and numSteps >= 1")
    if not 0 < kw.get("factor", 0.1) <= 1:
        raise ValueError("factor must be in (0, 1]")
    return Schedule(kind, kw.pop("base"), **kw)
