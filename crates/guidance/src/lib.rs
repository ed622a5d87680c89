//! Guided velocity fields for sampling: divergence-based mode seeking and classifier-free guidance.
