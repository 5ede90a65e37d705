"""The log processor's modules, in a package named after it so that they never collide
with another function's modules on one path (tests load several functions at once)."""
