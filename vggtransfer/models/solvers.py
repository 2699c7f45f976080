"""The linear models that selection cross-validates and the refit fits: closed-form ridge (one Cholesky
factorisation per alpha of the smaller centred Gram matrix, shared by the folds; for classes the least-squares
classifier on one-hot codes) and multinomial logistic regression (scikit-learn's lbfgs, warm-started along C, stopped
relative to its gradient at zero). On a large set the refit sums its cross-products over chunks of rows, so it holds
no float64 copy of the features.
"""

from __future__ import annotations

import warnings

import numpy as np

from vggtransfer.features.spec import CHUNK_ROWS


def _centred_kernel(k) -> tuple:
    """``(Kc, r)``: the training rows' kernel ``k`` centred on their mean, and ``r``, each row's inner product with
    that mean (``k``'s column means), which centres a kernel against other rows too."""
    r = k.mean(0)
    return k - r[:, None] - r[None, :] + r.mean(), r


def _ridge_fit(x, y, tr, alphas, gram=None, held_out=None) -> list:
    """``[(coef (d, outputs), intercept (outputs,)), ...]`` per alpha: ridge on rows ``tr`` of ``x`` (centred, the
    intercept unpenalised), one Cholesky factorisation per alpha of the smaller centred Gram matrix: the kernel
    ``n_tr x n_tr`` when the rows have more columns than there are rows (then ``coef = Xc^T (Kc + a I)^-1 Yc``), else
    the ``d x d`` cross-product.

    ``gram`` is what the folds share, computed once over every row by :func:`ridge_oof`: the kernel ``x x^T`` (the
    fold's kernel is a submatrix) or the cross-product ``x^T x`` (the fold's is it minus the ``held_out`` rows' own)."""
    from scipy.linalg import cho_factor, cho_solve

    xt = x[tr]
    xm, ym = xt.mean(0), y[tr].mean(0)
    yc = y[tr] - ym
    eye = np.eye(min(xt.shape))
    if xt.shape[1] > xt.shape[0]:
        kc, _ = _centred_kernel(gram[np.ix_(tr, tr)] if gram is not None else xt @ xt.T)
        xc = xt - xm

        def solve(a):
            return xc.T @ cho_solve(cho_factor(kc + a * eye), yc)
    else:
        c = gram - x[held_out].T @ x[held_out] if gram is not None else xt.T @ xt
        c = c - len(tr) * np.outer(xm, xm)
        b = xt.T @ yc

        def solve(a):
            return cho_solve(cho_factor(c + a * eye), b)

    out = []
    for a in alphas:
        w = solve(float(a))
        out.append((w, ym - xm @ w))
    return out


def _ridge_fit_rows(x, y, alpha: float) -> tuple:
    """``(coef (d, outputs), intercept (outputs,))``: the cross-product form of :func:`_ridge_fit` on every row, its
    sums taken over chunks of rows in float64, so the refit on a large set holds no float64 copy of ``x``."""
    from scipy.linalg import cho_factor, cho_solve

    n, d = x.shape
    ym = y.mean(0)
    xm, c, b = np.zeros(d), np.zeros((d, d)), np.zeros((d, y.shape[1]))
    for a in range(0, n, CHUNK_ROWS):
        xc = np.asarray(x[a : a + CHUNK_ROWS], np.float64)
        xm += xc.sum(0)
        c += xc.T @ xc
        b += xc.T @ (y[a : a + CHUNK_ROWS] - ym)
    xm /= n
    c -= n * np.outer(xm, xm)
    w = cho_solve(cho_factor(c + alpha * np.eye(d)), b)
    return w, ym - xm @ w


def _ridge_fold_kernel(gram, y, tr, te, alphas) -> list:
    """Held-out predictions ``[(len(te), outputs), ...]`` per alpha of ridge on rows ``tr``, from the kernel ``gram``
    of every row alone (the wide form of :func:`_ridge_fit`): ``Kc_te,tr (Kc + a I)^-1 Yc + mean(Y)``, with both
    kernels centred on the training rows' mean, so no weight vector of the group's width is ever formed."""
    from scipy.linalg import cho_factor, cho_solve

    ym = y[tr].mean(0)
    yc = y[tr] - ym
    kc, r = _centred_kernel(gram[np.ix_(tr, tr)])
    kt = gram[np.ix_(te, tr)]
    kt = kt - kt.mean(1)[:, None] - r[None, :] + r.mean()
    eye = np.eye(len(tr))
    return [kt @ cho_solve(cho_factor(kc + float(a) * eye), yc) + ym for a in alphas]


def ridge_oof_folds(x, y, folds, alphas):
    """Out-of-fold ridge predictions, one fold at a time: yields ``(te, preds)`` with ``preds`` of shape
    ``(len(alphas), len(te), outputs)``, so that a caller may stop early (selection's racing). ``y`` is ``(n,)`` or
    ``(n, outputs)`` (e.g. one-hot class codes: the least-squares classifier). The Gram matrix is computed once for
    all folds: the kernel ``x x^T`` when the rows are wider than a fold's training part is long (then every fold
    works in kernel space), else the cross-product ``x^T x`` (see :func:`_ridge_fit`). That is what makes a grid of
    block groups cheap on many classes."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64).reshape(len(x), -1)
    n_train = max(len(tr) for tr, _ in folds)
    wide = x.shape[1] > n_train
    gram = x @ x.T if wide else x.T @ x
    for tr, te in folds:
        if wide:
            yield te, np.stack(_ridge_fold_kernel(gram, y, tr, te, alphas))
        else:
            shared = gram if x.shape[1] <= len(tr) else None
            yield te, np.stack([x[te] @ w + b for w, b in _ridge_fit(x, y, tr, alphas, shared, te)])


def ridge_oof(x, y, folds, alphas) -> np.ndarray:
    """Out-of-fold ridge predictions ``(len(alphas), n, outputs)`` for every fold and alpha
    (:func:`ridge_oof_folds`, every fold)."""
    out = np.zeros((len(alphas), len(x), np.asarray(y).reshape(len(x), -1).shape[1]))
    for te, preds in ridge_oof_folds(x, y, folds, alphas):
        out[:, te] = preds
    return out


def ridge_path(x_train, y_train, x_test, alphas) -> np.ndarray:
    """Ridge predictions (len(alphas), n_test) of one target for every alpha."""
    x = np.concatenate([np.asarray(x_train, np.float64), np.asarray(x_test, np.float64)])
    y = np.concatenate([np.asarray(y_train, np.float64), np.zeros(len(x_test))])
    n = len(x_train)
    return ridge_oof(x, y, [(np.arange(n), np.arange(n, len(x)))], alphas)[:, n:, 0]


def fit_ridge(x, y, alpha: float) -> dict:
    """Closed-form ridge: ``{'coef', 'intercept'}``; one target ``(n,)`` gives ``coef (d,)`` and a float, several
    ``(n, outputs)`` (one-hot codes) give scikit-learn's layout ``coef (outputs, d)``, ``intercept (outputs,)``."""
    y = np.asarray(y, np.float64)
    if len(x) >= x.shape[1]:  # the d x d cross-product, summed over chunks of rows: no float64 copy of x
        w, b = _ridge_fit_rows(x, y.reshape(len(x), -1), alpha)
    else:
        ((w, b),) = _ridge_fit(np.asarray(x, np.float64), y.reshape(len(x), -1), np.arange(len(x)), [alpha])
    if y.ndim == 1:
        return {"coef": w[:, 0], "intercept": float(b[0])}
    return {"coef": w.T, "intercept": b}


#: Logistic regression stops when the largest gradient component has fallen to this fraction of its value at zero
#: (cross-validation; the refit goes 10x further). scikit-learn's ``tol`` is absolute, and on L2-normalised blocks
#: with many classes the gradient at zero is itself below a fixed 1e-3 (about 5e-4 on 102 classes): the solver
#: would stop before its first step and every candidate would score chance.
LOGREG_REL_TOL = 0.02


def _logreg_tol(x, y, rel: float, class_weight=None) -> float:
    """``rel`` x the largest gradient component of the mean multinomial log loss at zero weights."""
    y = np.asarray(y)
    classes, codes = np.unique(y, return_inverse=True)
    w = np.ones(len(y)) if class_weight is None else np.array([class_weight.get(int(c), 1.0) for c in y])
    onehot = np.eye(len(classes))[codes]
    resid = (1.0 / max(len(classes), 2) - onehot) * (w / w.sum())[:, None]
    grad = np.zeros((x.shape[1], resid.shape[1]))
    for a in range(0, len(x), CHUNK_ROWS):  # in chunks of rows: no float64 copy of a large x
        grad += np.asarray(x[a : a + CHUNK_ROWS], np.float64).T @ resid[a : a + CHUNK_ROWS]
    return rel * float(np.abs(grad).max()) or 1e-8


def logreg_path(x_train, y_train, x_test, cs, n_classes: int, class_weight=None, seed: int = 0) -> np.ndarray:
    """Log-probabilities (len(cs), n_test, K) of multinomial logistic regression along ``cs`` (warm-started)."""
    from sklearn.linear_model import LogisticRegression

    tol = _logreg_tol(x_train, y_train, LOGREG_REL_TOL, class_weight)
    clf = LogisticRegression(
        C=cs[0], max_iter=300, tol=tol, warm_start=True, class_weight=class_weight, random_state=seed
    )
    out = np.full((len(cs), len(x_test), n_classes), -np.inf)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, c in enumerate(cs):
            clf.set_params(C=c)
            clf.fit(x_train, y_train)
            out[i][:, clf.classes_] = clf.predict_log_proba(x_test)
    return out


def fit_logreg(x, y, c: float, class_weight=None, seed: int = 0):
    """A fitted multinomial LogisticRegression at ``C=c``."""
    from sklearn.linear_model import LogisticRegression

    tol = _logreg_tol(x, y, LOGREG_REL_TOL / 10, class_weight)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return LogisticRegression(C=c, max_iter=1000, tol=tol, class_weight=class_weight, random_state=seed).fit(x, y)


def logreg_arrays(clf, n_classes: int) -> tuple:
    """``(coef (K, d), intercept (K,))`` of a fitted LogisticRegression, one row per class of ``n_classes``:
    scikit-learn keeps one row for a binary problem (its predict_proba is expit = softmax([0, d])), so the other
    class gets a zero row; a class absent from the training labels gets zero weights and an intercept of -1e9 (its
    softmax probability is 0)."""
    coef, intercept = np.asarray(clf.coef_, np.float64), np.asarray(clf.intercept_, np.float64)
    if coef.shape[0] == 1:
        coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.r_[0.0, intercept]
    full_coef, full_int = np.zeros((n_classes, coef.shape[1])), np.full(n_classes, -1e9)
    full_coef[clf.classes_], full_int[clf.classes_] = coef, intercept
    return full_coef, full_int


__all__ = [
    "ridge_oof",
    "ridge_oof_folds",
    "ridge_path",
    "fit_ridge",
    "logreg_path",
    "fit_logreg",
    "logreg_arrays",
    "LOGREG_REL_TOL",
    "CHUNK_ROWS",
]
