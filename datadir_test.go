package garou_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/garou-chat/garou"
	"github.com/stretchr/testify/require"
)

// TestDataDirFiles: the data directory keeps the keys and the development
// certificate, readable by the owner only, and the same server identity
// comes back from them; a damaged key is an error, not a new key.
func TestDataDirFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "garou")
	a, err := garou.NewServer(garou.WithDataDir(dir), garou.WithLogger(quiet))
	require.NoError(t, err)
	b, err := garou.NewServer(garou.WithDataDir(dir), garou.WithLogger(quiet))
	require.NoError(t, err)
	require.Equal(t, a.Fingerprint(), b.Fingerprint())
	for _, name := range []string{"dev-cert.pem", "ticket.key", "reset.key", "session.key"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		require.NoError(t, err, name)
		require.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), name)
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "ticket.key"), []byte("short"), 0o600))
	_, err = garou.NewServer(garou.WithDataDir(dir), garou.WithLogger(quiet))
	require.ErrorContains(t, err, "ticket.key is not a 32-byte key")
}
