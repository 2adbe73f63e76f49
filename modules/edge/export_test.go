package edge

// SHA256Hex exports sha256Hex for the tests.
var SHA256Hex = sha256Hex
