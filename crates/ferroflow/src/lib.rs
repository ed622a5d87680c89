//! ferroflow: configs, data sets, training and evaluation of flow-matching models.
