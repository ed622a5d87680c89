//! Gaussian probability paths for flow matching: schedulers, conditional paths and velocities,
//! parameterisation conversions, and closed-form Gaussian-mixture marginals.
