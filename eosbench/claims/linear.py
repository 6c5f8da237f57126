"""Large-stepsize GD on a depth-2 scalar linear network (claim 7); filled in below."""
