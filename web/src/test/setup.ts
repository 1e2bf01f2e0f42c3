window.scrollTo = () => {};
