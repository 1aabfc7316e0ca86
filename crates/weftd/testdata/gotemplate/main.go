// Command gotemplate computes what Go's text/template prints for every case in cases.json over
// data.json, with the one extra function Weave Net's router registers for `weave report -f`
// (`json`) and the template name it uses ("format"), and writes the results to expected.json.
// weftd's template tests compare against expected.json; run `go run main.go` in this directory
// to regenerate it after editing cases.json.
package main

import (
	"bytes"
	"encoding/json"
	"os"
	"strconv"
	"text/template"
)

type testCase struct {
	Name     string `json:"name"`
	Template string `json:"template"`
}

type result struct {
	Name     string  `json:"name"`
	Template string  `json:"template"`
	Output   *string `json:"output,omitempty"`
	Error    *string `json:"error,omitempty"`
}

// numbers turns json.Number into the Go type a struct field would have: integers as int64
// (uint64 past its range), everything else as float64.
func numbers(v interface{}) interface{} {
	switch x := v.(type) {
	case map[string]interface{}:
		for k, e := range x {
			x[k] = numbers(e)
		}
	case []interface{}:
		for i, e := range x {
			x[i] = numbers(e)
		}
	case json.Number:
		if i, err := strconv.ParseInt(string(x), 10, 64); err == nil {
			return i
		}
		if u, err := strconv.ParseUint(string(x), 10, 64); err == nil {
			return u
		}
		f, _ := strconv.ParseFloat(string(x), 64)
		return f
	}
	return v
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}

func main() {
	raw, err := os.ReadFile("data.json")
	must(err)
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var data interface{}
	must(dec.Decode(&data))
	data = numbers(data)

	raw, err = os.ReadFile("cases.json")
	must(err)
	var cases []testCase
	must(json.Unmarshal(raw, &cases))

	funcs := template.FuncMap{
		"json": func(v interface{}) string {
			a, _ := json.Marshal(v)
			return string(a)
		},
	}
	results := make([]result, 0, len(cases))
	for _, c := range cases {
		r := result{Name: c.Name, Template: c.Template}
		t, err := template.New("format").Funcs(funcs).Parse(c.Template)
		if err == nil {
			var out bytes.Buffer
			err = t.Execute(&out, data)
			if err == nil {
				s := out.String()
				r.Output = &s
			}
		}
		if err != nil {
			s := err.Error()
			r.Error = &s
		}
		results = append(results, r)
	}
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	must(enc.Encode(results))
	must(os.WriteFile("expected.json", out.Bytes(), 0o644))
}
