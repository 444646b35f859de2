"""Baselines every forecast is compared with: persistence, optical-flow extrapolation (pysteps), a UNet and a
ConvLSTM."""
