package leveret

import "testing"

func TestVersionAtLeast(t *testing.T) {
	for _, tc := range []struct {
		v    string
		want bool
	}{
		{"4.1.0", true}, {"4.3.6", true}, {"4.10", true}, {"5.0.0", true}, {"4.1-rc.2", true},
		{"4.0.5", false}, {"3.10.8", false}, {"4", false}, {"", false}, {"x.y", false},
	} {
		if got := versionAtLeast(tc.v, 4, 1); got != tc.want {
			t.Errorf("versionAtLeast(%q, 4, 1) = %v, want %v", tc.v, got, tc.want)
		}
	}
}
