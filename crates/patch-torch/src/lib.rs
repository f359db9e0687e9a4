//! Patches of the exporter's own behaviour, the "torch fixes" of the seeds (family `torch`).
//! Filled by the patches issue.
