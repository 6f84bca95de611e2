package httpapi

import (
	_ "embed"
	"net/http"
)

// openAPISpec is the OpenAPI 3 description of this API, kept in the source
// next to the route table; a test checks that both list the same routes.
//
//go:embed openapi.json
var openAPISpec []byte

func (a *API) openAPI(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Del("Cache-Control")
	w.WriteHeader(http.StatusOK)
	w.Write(openAPISpec)
	return nil
}
