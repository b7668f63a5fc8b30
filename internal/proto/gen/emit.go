package main

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
)

type printer struct{ bytes.Buffer }

func (p *printer) f(format string, args ...any) { fmt.Fprintf(&p.Buffer, format, args...) }

// genMethods emits methods_gen.go.
func genMethods(methods []*method) []byte {
	var p printer
	p.f("%s", header)
	p.f("package proto\n\n")
	std := []string{`"fmt"`}
	if uses(methods, "timestamp") {
		std = append(std, `"time"`)
	}
	p.f("import (\n%s\n\n\"github.com/leveret-mq/leveret/ops\"\n)\n\n", strings.Join(std, "\n"))
	p.f("%s", methodPreamble)

	p.f("// Method ids, class<<16 | method.\nconst (\n")
	for _, m := range methods {
		p.f("%sID MethodID = %d<<16 | %d // %s\n", m.GoName(), m.ClassID, m.Index, m.FullName())
	}
	p.f(")\n\n")

	p.f("// allMethods lists every method id in order.\nvar allMethods = [...]MethodID{\n")
	for _, m := range methods {
		p.f("%sID,\n", m.GoName())
	}
	p.f("}\n\n")

	genIDFuncs(&p, methods)
	for _, m := range methods {
		genStruct(&p, m)
	}
	return p.Bytes()
}

func uses(methods []*method, prim string) bool {
	for _, m := range methods {
		for _, f := range m.Fields {
			if f.Prim == prim {
				return true
			}
		}
	}
	return false
}

// genIDFuncs emits MethodID's methods and NewMethod.
func genIDFuncs(p *printer, methods []*method) {
	p.f("// String returns the method's spec name, e.g. \"queue.declare\".\n")
	p.f("func (id MethodID) String() string {\nswitch id {\n")
	for _, m := range methods {
		p.f("case %sID:\nreturn %q\n", m.GoName(), m.FullName())
	}
	p.f("}\nreturn fmt.Sprintf(\"method(%%d,%%d)\", id.Class(), id.Method())\n}\n\n")

	idSet(p, methods, "Synchronous", "reports whether the spec marks the method synchronous:\n// the peer answers it with one of Replies (unless no-wait is set).",
		func(m *method) bool { return m.Sync })
	idSet(p, methods, "HasContent", "reports whether a content header and body frames follow the method.",
		func(m *method) bool { return m.Content })

	p.f("// Reply lists, shared by all callers of Replies.\nvar (\n")
	for _, m := range methods {
		if len(m.Replies) > 0 {
			p.f("replies%s = []MethodID{%sID}\n", m.GoName(), strings.Join(m.Replies, "ID, "))
		}
	}
	p.f(")\n\n")
	p.f("// Replies returns the methods that answer a synchronous request, or nil.\n")
	p.f("// The returned slice is shared: callers must not modify it.\n")
	p.f("func (id MethodID) Replies() []MethodID {\nswitch id {\n")
	for _, m := range methods {
		if len(m.Replies) > 0 {
			p.f("case %sID:\nreturn replies%s\n", m.GoName(), m.GoName())
		}
	}
	p.f("}\nreturn nil\n}\n\n")

	p.f("// NewMethod returns a pointer to a zero method struct for id, or nil if id\n// names no method.\n")
	p.f("func NewMethod(id MethodID) Method {\nswitch id {\n")
	for _, m := range methods {
		p.f("case %sID:\nreturn new(%s)\n", m.GoName(), m.GoName())
	}
	p.f("}\nreturn nil\n}\n\n")
}

func idSet(p *printer, methods []*method, name, doc string, in func(*method) bool) {
	var ids []string
	for _, m := range methods {
		if in(m) {
			ids = append(ids, m.GoName()+"ID")
		}
	}
	p.f("// %s %s\n", name, doc)
	p.f("func (id MethodID) %s() bool {\nswitch id {\ncase %s:\nreturn true\n}\nreturn false\n}\n\n",
		name, strings.Join(ids, ",\n"))
}

// genStruct emits a method's struct, ID, Append and Decode.
func genStruct(p *printer, m *method) {
	name := m.GoName()
	p.f("// %s is %s (%d, %d).\ntype %s struct {\n", name, m.FullName(), m.ClassID, m.Index, name)
	for _, f := range m.Fields {
		note := f.XMLName + " " + f.Prim
		if f.Reserved {
			note += ", reserved"
		}
		p.f("%s %s // %s\n", f.GoName, goTypes[f.Prim], note)
	}
	p.f("}\n\n")
	p.f("// ID returns %sID.\nfunc (*%s) ID() MethodID { return %sID }\n\n", name, name, name)

	p.f("// Append appends the arguments to dst.\n")
	if len(m.Fields) == 0 {
		p.f("func (*%s) Append(dst []byte) ([]byte, error) { return dst, nil }\n\n", name)
	} else {
		p.f("func (m *%s) Append(dst []byte) ([]byte, error) {\ne := encoder{buf: dst}\n", name)
		forFields(m.Fields, func(f field) {
			p.f("e.%s(m.%s)\n", f.Prim, f.GoName)
		}, func(bits []field) {
			terms := make([]string, len(bits))
			for i, f := range bits {
				terms[i] = fmt.Sprintf("bit(m.%s, %d)", f.GoName, i)
			}
			p.f("e.octet(%s)\n", strings.Join(terms, " | "))
		})
		p.f("return e.result(dst)\n}\n\n")
	}

	p.f("// Decode sets m from the arguments in args.\n")
	if len(m.Fields) == 0 {
		p.f("func (*%s) Decode(args []byte) error {\nd := decoder{src: args}\nreturn d.finish()\n}\n\n", name)
		return
	}
	p.f("func (m *%s) Decode(args []byte) error {\nd := decoder{src: args}\n", name)
	forFields(m.Fields, func(f field) {
		p.f("m.%s = d.%s()\n", f.GoName, f.Prim)
	}, func(bits []field) {
		p.f("bits := d.octet()\n")
		for i, f := range bits {
			p.f("m.%s = bits&(1<<%d) != 0\n", f.GoName, i)
		}
	})
	p.f("return d.finish()\n}\n\n")
}

// forFields calls one for each non-bit field and bits for each run of
// consecutive bit fields, which share one octet (first field in the lowest
// bit), eight at most.
func forFields(fields []field, one func(field), bits func([]field)) {
	for i := 0; i < len(fields); {
		if fields[i].Prim != "bit" {
			one(fields[i])
			i++
			continue
		}
		j := i
		for j < len(fields) && j-i < 8 && fields[j].Prim == "bit" {
			j++
		}
		bits(fields[i:j])
		i = j
	}
}

// genConstants emits constants_gen.go: class ids and reply codes.
func genConstants(s *amqpSpec) []byte {
	var p printer
	p.f("%s", header)
	p.f("package proto\n\nimport \"fmt\"\n\n")
	p.f("// ReplyCode is the reply-code of connection.close and channel.close.\ntype ReplyCode uint16\n\n")
	p.f("// Class ids.\nconst (\n")
	classes := slices.Clone(s.Classes)
	slices.SortFunc(classes, func(a, b xmlClass) int { return int(a.Index) - int(b.Index) })
	for _, c := range classes {
		p.f("Class%s = %d\n", camel(c.Name), c.Index)
	}
	p.f(")\n\n")

	var codes []xmlConstant
	for _, c := range s.Constants {
		if c.Name == "reply-success" || strings.HasSuffix(c.Class, "-error") {
			codes = append(codes, c)
		}
	}
	p.f("// Reply codes, sent in connection.close and channel.close.\nconst (\n")
	for _, c := range codes {
		kind := "success"
		if c.Class != "" {
			kind = strings.TrimSuffix(c.Class, "-error") + " error"
		}
		p.f("%s ReplyCode = %d // %s\n", camel(c.Name), c.Value, kind)
	}
	p.f(")\n\n")

	p.f("// String returns the spec's name for c, e.g. \"NOT_FOUND\".\nfunc (c ReplyCode) String() string {\nswitch c {\n")
	for _, c := range codes {
		p.f("case %s:\nreturn %q\n", camel(c.Name), upperSnake(c.Name))
	}
	p.f("}\nreturn fmt.Sprintf(\"reply code %%d\", uint16(c))\n}\n\n")

	var hard []string
	for _, c := range codes {
		if c.Class == "hard-error" {
			hard = append(hard, camel(c.Name))
		}
	}
	p.f("// Hard reports whether c is a hard error, one that closes the connection\n// rather than only the channel.\n")
	p.f("func (c ReplyCode) Hard() bool {\nswitch c {\ncase %s:\nreturn true\n}\nreturn false\n}\n",
		strings.Join(hard, ",\n"))
	return p.Bytes()
}

const methodPreamble = `// MethodID identifies a method: class<<16 | method.
type MethodID uint32

// Class returns the class id.
func (id MethodID) Class() uint16 { return uint16(id >> 16) }

// Method returns the method id within the class.
func (id MethodID) Method() uint16 { return uint16(id) }

// Method is one of the generated method structs, always a pointer.
type Method interface {
	// ID returns the method's id.
	ID() MethodID
	// Append appends the method's arguments (not its ids) to dst. It fails,
	// returning dst unchanged, on a shortstr over 255 bytes or a table value
	// that cannot be encoded. It allocates only to grow dst.
	Append(dst []byte) ([]byte, error)
	// Decode sets the method's fields from its arguments. It fails on
	// truncated input and on trailing bytes; it never panics.
	Decode(args []byte) error
}

`
