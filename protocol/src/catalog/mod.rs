//! The catalog entry: what the packager writes beside a packaged title (`catalog.json`) and the
//! control plane imports. Built by the packager issue.
