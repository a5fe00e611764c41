package api

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"

	"go.yaml.in/yaml/v3"
)

// openAPIYAML is the OpenAPI 3.1 document of the API, kept true by openapi_test.go.
//
//go:embed openapi.yaml
var openAPIYAML []byte

// openAPIJSON is the document as JSON, converted once. A conversion error is a programming error
// that the tests catch; the handler answers it with 500 rather than panicking.
var openAPIJSON = sync.OnceValues(func() ([]byte, error) { return yamlToJSON(openAPIYAML) })

// openAPI is GET /api/v1/openapi.json.
func (s *Server) openAPI(w http.ResponseWriter, r *http.Request) {
	b, err := openAPIJSON()
	if err != nil {
		fail(w, http.StatusInternalServerError, "", "the OpenAPI document cannot be served: %v", err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
}

// yamlToJSON converts a YAML document to JSON. YAML allows mapping keys that JSON does not
// (response codes such as 200 decode as integers); scalar keys become their text, others are an
// error.
func yamlToJSON(doc []byte) ([]byte, error) {
	var v any
	if err := yaml.Unmarshal(doc, &v); err != nil {
		return nil, fmt.Errorf("openapi: decode YAML: %w", err)
	}
	v, err := jsonValue(v, "")
	if err != nil {
		return nil, fmt.Errorf("openapi: %w", err)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("openapi: encode JSON: %w", err)
	}
	return b, nil
}

// jsonValue returns v with every mapping keyed by strings; path names v in errors.
func jsonValue(v any, path string) (any, error) {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			c, err := jsonValue(e, path+"/"+k)
			if err != nil {
				return nil, err
			}
			v[k] = c
		}
		return v, nil
	case map[any]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			var key string
			switch k := k.(type) {
			case string:
				key = k
			case int, int64, uint64, float64, bool:
				key = fmt.Sprint(k)
			default:
				return nil, fmt.Errorf("%s: mapping key %v (%T) is not a scalar", path, k, k)
			}
			if _, dup := out[key]; dup {
				return nil, fmt.Errorf("%s: mapping key %q appears twice", path, key)
			}
			c, err := jsonValue(e, path+"/"+key)
			if err != nil {
				return nil, err
			}
			out[key] = c
		}
		return out, nil
	case []any:
		for i, e := range v {
			c, err := jsonValue(e, fmt.Sprintf("%s/%d", path, i))
			if err != nil {
				return nil, err
			}
			v[i] = c
		}
		return v, nil
	}
	return v, nil
}
