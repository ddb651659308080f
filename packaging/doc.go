// Package packaging holds what the DEB and the MSI are built from (deb/, msi/) and
// the tests that build both and inspect the results.
package packaging
