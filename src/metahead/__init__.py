"""metahead: few-shot adversarial learning of realistic neural talking-head models (Zakharov et al., 2019)."""

__version__ = "0.1.0"
