package dotenv

import (
	"reflect"
	"testing"
)

// Each key's line is where the assignment that counts starts: the last one, the first line of
// a multi-line value.
func TestParseLines(t *testing.T) {
	vars, lines, errs := ParseLines([]byte("# c\nBL_API_URL=a\nBL_RUN_URL=\"x\ny\"\nBL_API_URL=b\r\nBROKEN\n"))
	if vars["BL_API_URL"] != "b" || len(errs) != 1 {
		t.Fatalf("vars %v errs %v", vars, errs)
	}
	if want := map[string]int{"BL_API_URL": 5, "BL_RUN_URL": 3}; !reflect.DeepEqual(lines, want) {
		t.Fatalf("lines %v, want %v", lines, want)
	}
}
