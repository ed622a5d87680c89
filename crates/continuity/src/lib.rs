//! Continuity-equation math on regular grids: densities, fluxes, finite-volume residuals, Fokker-Planck
//! drift-diffusion, and the Lagrangian log-density along trajectories.
