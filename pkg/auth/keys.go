package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
)

// Algorithms a key can be bound to.
const (
	AlgHS256 = "HS256"
	AlgRS256 = "RS256"
	AlgES256 = "ES256"
	AlgEdDSA = "EdDSA"
)

// MinSecretBytes is the shortest HS256 secret or ticket key accepted.
const MinSecretBytes = 32

// Key is a verification key bound to one algorithm: a token signed with
// any other algorithm is never checked against it.
type Key struct {
	// ID is the key id ("kid"); a key without one verifies tokens of its
	// algorithm whatever their kid.
	ID string
	// Alg is one of AlgHS256, AlgRS256, AlgES256, AlgEdDSA.
	Alg string
	// Material is []byte for HS256, *rsa.PublicKey, *ecdsa.PublicKey (P-256)
	// or ed25519.PublicKey.
	Material any
}

// HS256Key returns the key of an HS256 shared secret.
func HS256Key(secret []byte) (Key, error) {
	if len(secret) < MinSecretBytes {
		return Key{}, fmt.Errorf("auth: HS256 secret has %d bytes, want at least %d", len(secret), MinSecretBytes)
	}
	return Key{Alg: AlgHS256, Material: secret}, nil
}

// PublicKey binds a public key to the algorithm of its type.
func PublicKey(id string, pub crypto.PublicKey) (Key, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return Key{}, fmt.Errorf("auth: RSA key of %d bits, want at least 2048", k.N.BitLen())
		}
		return Key{ID: id, Alg: AlgRS256, Material: k}, nil
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return Key{}, errors.New("auth: ECDSA key is not on P-256 (ES256)")
		}
		return Key{ID: id, Alg: AlgES256, Material: k}, nil
	case ed25519.PublicKey:
		return Key{ID: id, Alg: AlgEdDSA, Material: k}, nil
	}
	return Key{}, fmt.Errorf("auth: unsupported public key type %T", pub)
}

// ParsePEMKeys reads every public key of a PEM file: PUBLIC KEY (PKIX),
// RSA PUBLIC KEY (PKCS #1) and CERTIFICATE blocks. Private keys are refused.
func ParsePEMKeys(data []byte) ([]Key, error) {
	var keys []Key
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		var pub any
		var err error
		switch block.Type {
		case "PUBLIC KEY":
			pub, err = x509.ParsePKIXPublicKey(block.Bytes)
		case "RSA PUBLIC KEY":
			pub, err = x509.ParsePKCS1PublicKey(block.Bytes)
		case "CERTIFICATE":
			var c *x509.Certificate
			if c, err = x509.ParseCertificate(block.Bytes); err == nil {
				pub = c.PublicKey
			}
		default:
			return nil, fmt.Errorf("auth: PEM block %q is not a public key (give the public half only)", block.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("auth: PEM block %q: %w", block.Type, err)
		}
		k, err := PublicKey("", pub)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("auth: no PEM public key found")
	}
	return keys, nil
}

type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
	Crv string `json:"crv"`
	N   string `json:"n"`
	E   string `json:"e"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

// ParseJWKS reads a JSON Web Key Set (RFC 7517): RSA, EC P-256 and OKP
// Ed25519 keys. Keys for encryption ("use": "enc"), of other types, or
// whose "alg" does not fit their type are skipped; symmetric ("oct") keys
// are never taken from a key set.
func ParseJWKS(data []byte) ([]Key, error) {
	var set struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("auth: JWKS: %w", err)
	}
	var keys []Key
	for _, j := range set.Keys {
		if j.Use != "" && j.Use != "sig" {
			continue
		}
		pub, err := j.public()
		if err != nil {
			continue
		}
		k, err := PublicKey(j.Kid, pub)
		if err != nil || (j.Alg != "" && j.Alg != k.Alg) {
			continue
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("auth: JWKS has no usable signing key")
	}
	return keys, nil
}

func (j jwk) public() (crypto.PublicKey, error) {
	b64 := func(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(s) }
	switch j.Kty {
	case "RSA":
		n, err := b64(j.N)
		if err != nil {
			return nil, err
		}
		e, err := b64(j.E)
		if err != nil || len(e) == 0 || len(e) > 4 {
			return nil, errors.New("bad exponent")
		}
		return &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}, nil
	case "EC":
		if j.Crv != "P-256" {
			return nil, errors.New("unsupported curve")
		}
		x, err := b64(j.X)
		if err != nil || len(x) != 32 {
			return nil, errors.New("bad x")
		}
		y, err := b64(j.Y)
		if err != nil || len(y) != 32 {
			return nil, errors.New("bad y")
		}
		// Uncompressed point; ecdsa.ParseUncompressedPublicKey checks it is on the curve.
		return ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
	case "OKP":
		x, err := b64(j.X)
		if j.Crv != "Ed25519" || err != nil || len(x) != ed25519.PublicKeySize {
			return nil, errors.New("bad Ed25519 key")
		}
		return ed25519.PublicKey(x), nil
	}
	return nil, errors.New("unsupported key type")
}
