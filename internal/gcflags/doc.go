// Package gcflags reads scripts/autopatchd.gcflags, the compiler flags every
// build of autopatchd that ships or is measured uses.
//
// The file's format: one go build -gcflags value per line ("all=-l",
// "runtime="), in order; blank lines and lines starting with # are skipped,
// and surrounding white space is trimmed. Each remaining line becomes one
// "-gcflags=<line>" argument; when several patterns match a package, the go
// command lets the last one win.
package gcflags
