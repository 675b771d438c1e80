package device
